//! `telemetry:`.

use super::*;

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, t: &RawTelemetry) -> TelemetryConfig {
        let path = "telemetry.otlp_endpoint";
        let otlp_endpoint = self
            .text(&t.otlp_endpoint)
            .and_then(|url| match otlp_endpoint(&url) {
                Ok(u) => Some(u),
                Err(why) => {
                    self.error(path, why);
                    None
                }
            });
        let trace_context = self.flag_or(
            "telemetry.trace_context",
            &t.trace_context,
            otlp_endpoint.is_some(),
        );
        let service_name = match self.text(&t.service_name) {
            None => DEFAULT_SERVICE_NAME.to_string(),
            Some(n) if !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control) => n,
            Some(n) => {
                self.error(
                    "telemetry.service_name",
                    format!("expected 1 to 128 printable characters, got {n:?}"),
                );
                DEFAULT_SERVICE_NAME.to_string()
            }
        };
        TelemetryConfig {
            otlp_endpoint,
            trace_context,
            service_name,
        }
    }
}

/// An OTLP/HTTP traces URL: `http://` or `https://`, a host, an optional
/// port and path (none: `/v1/traces`), no user information, query or
/// fragment.
pub(crate) fn otlp_endpoint(url: &str) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{url:?}: expected an http:// or https:// URL such as http://127.0.0.1:4318"
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: no user information in the URL"));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, r)| r);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(format!("{url:?}: {port:?} is not a port (1-65535)"));
        }
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{url:?}: no query or fragment in the URL"));
    }
    let base = url.trim_end_matches('/');
    Ok(match uri.path() {
        "" | "/" => format!("{base}/v1/traces"),
        _ => url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::otlp_endpoint;

    #[test]
    fn otlp_endpoints_are_http_urls() {
        assert_eq!(
            otlp_endpoint("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            otlp_endpoint("https://otel.example.com/").as_deref(),
            Ok("https://otel.example.com/v1/traces")
        );
        assert_eq!(
            otlp_endpoint("http://c:4318/custom/traces").as_deref(),
            Ok("http://c:4318/custom/traces")
        );
        for bad in [
            "",
            "127.0.0.1:4318",
            "ftp://x/",
            "grpc://x:4317",
            "http://",
            "http://u:p@x:4318",
            "http://x:4318/v1/traces?a=b",
            "http://x:4318/#f",
            "http://x:99999",
            "http://x y",
            "/v1/traces",
        ] {
            assert!(otlp_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }
}
