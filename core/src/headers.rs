//! Request header names that HTTP, the proxy or an upstream framework give
//! a meaning of their own: the proxy's forwarding rules (`proxy::forward`:
//! what never reaches an upstream) and the config's `proxy.key_header`
//! check ([`key_header_problem`]) read the same lists. Names are compared as
//! CGI-style servers see them ([`cgi`]): lower case, `_` as `-`.

/// Forwarding headers an untrusted client may not set (the proxy sets its own
/// `X-Forwarded-For`, `-Proto` and `-Host`).
pub const CLIENT_ADDRESS_HEADERS: [&str; 33] = [
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "fastly-client-ip",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-forwarded-for",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    // Black-box round 16: the client-address headers of other balancers,
    // CDNs and clouds, which an upstream behind them may believe.
    "client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-real-client-ip",
    "x-true-client-ip",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-envoy-external-address",
    "akamai-client-ip",
    "cloudfront-viewer-address",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-appengine-user-ip",
    "ali-cdn-real-ip",
    "fly-client-ip",
    "do-connecting-ip",
    "cdn-src-ip",
    "x-cdn-src-ip",
];

/// Prefixes no untrusted client may send: every `X-Forwarded-*` (the proxy
/// sets `-For`, `-Proto` and `-Host` itself; the others, `-Ssl`,
/// `-Scheme`, `-Client-Cert`, …, tell frameworks how the request came in)
/// and Envoy's `x-envoy-*` (what an Envoy behind the proxy believes of
/// internal callers). Re-check of round 16.
pub const CLIENT_FORWARDING_PREFIXES: [&str; 2] = ["x-forwarded-", "x-envoy-"];

/// What the names of client-address headers hold, beyond the list above
/// (`CF-Connecting-IPv6`, `X-ARR-ClientIP`, `Incap-Client-IP`,
/// `X-Vercel-Forwarded-For`, `X-Nf-Client-Connection-Ip`, `Remote-Addr`,
/// …): other balancers, CDNs and clouds name theirs alike.
pub const CLIENT_ADDRESS_FRAGMENTS: [&str; 16] = [
    "client-ip",
    "clientip",
    "client-addr",
    "connecting-ip",
    "connection-ip",
    "real-ip",
    "remote-addr",
    "remote-ip",
    "source-ip",
    "true-ip",
    "user-ip",
    "viewer-address",
    "external-address",
    "pseudo-ip",
    "forwarded-for",
    "ip-authorization",
];

/// Whether `name` (CGI form, [`cgi`]) is a forwarding or client-address
/// header an untrusted client may not send: one of
/// [`CLIENT_ADDRESS_HEADERS`], under a [`CLIENT_FORWARDING_PREFIXES`]
/// prefix, or holding a [`CLIENT_ADDRESS_FRAGMENTS`] fragment. Most names
/// are refused by a look for `ip`, `addr` and `forwarded` before the
/// fragments are searched.
pub fn is_client_address_header(name: &str) -> bool {
    CLIENT_ADDRESS_HEADERS.contains(&name)
        || CLIENT_FORWARDING_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
        || ((name.contains("ip") || name.contains("addr") || name.contains("forwarded"))
            && CLIENT_ADDRESS_FRAGMENTS.iter().any(|f| name.contains(f)))
}

/// Headers some frameworks take as the real method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// Headers some frameworks (IIS, Symfony, Zend) take as the real path: the
/// route was chosen on the request line, so they are never passed on.
pub const PATH_OVERRIDE_HEADERS: [&str; 3] =
    ["x-original-url", "x-rewrite-url", "x-envoy-original-path"];

/// Connection-level headers: the real ones are Pingora's business, and a
/// spelling with `_` (`Content_Length`, `Transfer_Encoding`) is a second,
/// conflicting framing header to a CGI-style server, so it never passes.
pub const FRAMING_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Protocol upgrades (WebSocket, h2c) are not forwarded: after a `101` the
/// connection would be a raw tunnel that no route, key or limit governs.
/// The exception is a WebSocket handshake on a `websocket: true` route,
/// whose key and limits were checked on the upgrade request
/// (the proxy's `Forwarding::websocket`).
pub const UPGRADE_HEADERS: [&str; 2] = ["upgrade", "http2-settings"];

/// Set by the proxy on every forwarded request; a client's are dropped.
pub const SET_BY_PROXY: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-client-request-id",
];

/// The proxy's own prefix.
pub const OWN_PREFIX: &str = "x-tollgate-";

/// A header name as a CGI gateway sees it: lower case, `_` as `-`. Names
/// from the parser are already lower case, so most need no copy.
pub fn cgi(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        name.chars()
            .map(|c| match c {
                '_' => '-',
                c => c.to_ascii_lowercase(),
            })
            .collect::<String>()
            .into()
    } else {
        name.into()
    }
}

/// The most `Connection` tokens a request may carry (Pingora refuses the
/// tenth nomination when it builds the upstream request).
pub const MAX_CONNECTION_TOKENS: usize = 9;

/// Why a request's `Connection` field lines (`values`) are refused, if they
/// are. Each token names a hop-by-hop header that is removed before
/// forwarding (RFC 9110 §7.6.1), so a token naming a header that frames the
/// request or that the proxy sets (`Host`, `Content-Length`,
/// `Transfer-Encoding`, `X-Forwarded-*`, `X-Request-Id`, `X-Tollgate-*`)
/// would take it from the forwarded request; so are tokens that are not
/// header names (`:authority`, `"quoted"`) and more than
/// [`MAX_CONNECTION_TOKENS`]. `close`, `keep-alive`, `upgrade`, `te` and
/// other names pass. Refused before routing: Pingora would refuse these
/// only once the key and limits were spent.
pub fn connection_problem<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut count = 0;
    for token in values
        .into_iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
    {
        count += 1;
        if count > MAX_CONNECTION_TOKENS {
            return Some(format!(
                "the Connection header may list {MAX_CONNECTION_TOKENS} options at most"
            ));
        }
        let Some(name) = std::str::from_utf8(token)
            .ok()
            .filter(|t| t.bytes().all(is_tchar))
        else {
            return Some("a Connection option must be a header name".into());
        };
        let n = cgi(name);
        let n = n.as_ref();
        if ["host", "content-length", "transfer-encoding"].contains(&n)
            || SET_BY_PROXY.contains(&n)
            || n.starts_with("x-forwarded-")
            || n.starts_with(OWN_PREFIX)
        {
            return Some(format!(
                "the Connection header may not list {name}: the proxy frames or sets it"
            ));
        }
    }
    None
}

/// A `tchar` of RFC 9110 §5.6.2: what a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Headers that carry something else a request needs, beyond the lists
/// above: credentials and session state (`Authorization` is already read
/// for `Bearer` keys), `Expect`, CORS and trace context, the body's type.
pub const OTHER_MEANINGS: [&str; 21] = [
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "cookie",
    "cookie2",
    "set-cookie",
    "expect",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-host",
    "x-original-host",
    "content-type",
    "content-encoding",
    "via",
    "max-forwards",
    "x-cloud-trace-context",
];

/// Name prefixes of header families with another meaning: forwarding
/// (`X-Forwarded-Uri`, `-Ssl`, `-Scheme`, …), Zipkin's trace context
/// (`X-B3-TraceId`, …), the WebSocket handshake (`Sec-WebSocket-Key`, …).
pub const OTHER_MEANING_PREFIXES: [&str; 3] = ["x-forwarded-", "x-b3-", "sec-websocket-"];

/// Why `name` cannot be `proxy.key_header`, if it cannot: the key header is
/// read for the key and removed before forwarding, so a header HTTP, the
/// proxy or the upstream gives another meaning would either never hold a
/// key or be taken from every request (`Host`, `Content-Length`, `Cookie`).
pub fn key_header_problem(name: &str) -> Option<String> {
    let n = cgi(name);
    let n = n.as_ref();
    let what = if FRAMING_HEADERS.contains(&n) || UPGRADE_HEADERS.contains(&n) {
        "a hop-by-hop or framing header"
    } else if is_client_address_header(n) || SET_BY_PROXY.contains(&n) {
        "a forwarding header the proxy sets or drops"
    } else if n.starts_with(OWN_PREFIX) {
        "one of the proxy's own X-Tollgate-* headers"
    } else if METHOD_OVERRIDE_HEADERS.contains(&n) || PATH_OVERRIDE_HEADERS.contains(&n) {
        "a method or path override header"
    } else if OTHER_MEANINGS.contains(&n) || OTHER_MEANING_PREFIXES.iter().any(|p| n.starts_with(p))
    {
        "a header requests need for something else"
    } else {
        return None;
    };
    Some(format!(
        "{name:?} is {what}; the key header is read and removed before forwarding, so use a header of its own such as x-api-key"
    ))
}

/// The content coding a request body is sent in (its `Content-Encoding`
/// field lines), if any: `None` without one (`identity` and empty list
/// members mean none). The admin API and the verify API read request
/// bodies as sent and decode none (RFC 9110 §8.4), so a coded body is
/// refused with 415, never parsed as if it were plain; the one rule of both.
pub fn content_coding<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            return Some(String::from_utf8_lossy(value).chars().take(64).collect());
        };
        for coding in text.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Some(coding.chars().take(64).collect());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_content_coding_but_identity_is_named() {
        let coding = |values: &[&str]| content_coding(values.iter().map(|v| v.as_bytes()));
        assert_eq!(coding(&[]), None);
        assert_eq!(coding(&[""]), None);
        assert_eq!(coding(&["identity", " Identity , "]), None);
        assert_eq!(coding(&["gzip"]), Some("gzip".into()));
        assert_eq!(coding(&["identity, br"]), Some("br".into()));
        assert_eq!(coding(&["identity", "deflate"]), Some("deflate".into()));
        assert_eq!(coding(&["x-anything"]), Some("x-anything".into()));
        assert_eq!(
            content_coding([&b"\xffgzip"[..]]),
            Some("\u{fffd}gzip".into())
        );
    }

    #[test]
    fn client_address_headers_are_known_by_name_prefix_and_fragment() {
        for h in [
            "forwarded",
            "x-real-ip",
            "cf-connecting-ip",
            "cf-connecting-ipv6",
            "cf-pseudo-ipv4",
            "x-arr-clientip",
            "incap-client-ip",
            "x-sucuri-clientip",
            "x-vercel-forwarded-for",
            "x-nf-client-connection-ip",
            "x-appengine-remote-addr",
            "x-true-ip",
            "x-real-remote-addr",
            "x-original-remote-addr",
            "x-client-addr",
            "x-source-ip",
            "source-ip",
            "remote-addr",
            "x-wap-network-client-ip",
            "x-zscaler-client-ip",
            "x-custom-ip-authorization",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-forwarded-client-cert",
            "x-forwarded-ip",
            "x-envoy-internal",
            "x-envoy-external-address",
        ] {
            assert!(is_client_address_header(h), "{h}");
        }
        for h in [
            "accept",
            "user-agent",
            "x-api-key",
            "authorization",
            "content-type",
            "x-ship-to",
            "x-description",
            "if-modified-since",
            "x-tollgate-key-id",
            "traceparent",
        ] {
            assert!(!is_client_address_header(h), "{h}");
        }
    }

    #[test]
    fn key_headers_with_another_meaning_are_named() {
        for bad in [
            "host",
            "Content-Length",
            "content_length",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            "cookie",
            "authorization",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "x-request-id",
            "x-tollgate-key-id",
            "x-http-method-override",
            "x-original-url",
            "traceparent",
            // Black-box round 11: the families, not only their members.
            "x-forwarded-uri",
            "x_forwarded_uri",
            "X-Forwarded-Ssl",
            "x-forwarded-anything",
            "x-original-host",
            "x-host",
            "baggage",
            "b3",
            "x-b3-traceid",
            "sec-websocket-key",
            "proxy-authenticate",
            "set-cookie",
            "cookie2",
        ] {
            assert!(key_header_problem(bad).is_some(), "{bad}");
        }
        for good in [
            "x-api-key",
            "x_api_key",
            "api-key",
            "x-key",
            "apikey",
            "x-forwardedkey",
            "x-b3key",
        ] {
            assert_eq!(key_header_problem(good), None, "{good}");
        }
        let m = key_header_problem("Host").unwrap_or_default();
        assert!(
            m.contains("\"Host\" is a hop-by-hop or framing header"),
            "{m}"
        );
    }

    #[test]
    fn connection_options_naming_what_the_proxy_frames_or_sets_are_refused() {
        let problem = |v: &str| connection_problem([v.as_bytes()]);
        for ok in [
            "keep-alive",
            "close",
            "Upgrade",
            "keep-alive, Upgrade",
            "TE, close",
            "x-custom-hop, , foo",
            "",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for bad in [
            "host",
            "Host",
            "keep-alive, x-forwarded-for",
            "X_Forwarded_Host",
            "x-forwarded-proto",
            "x-forwarded-whatever",
            "content-length",
            "Transfer-Encoding",
            "x-request-id",
            "x-client-request-id",
            "x-tollgate-key-id",
            ":authority",
            "\"x-forwarded-for\"",
            "a,b,c,d,e,f,g,h,i,j",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
        // Across field lines too.
        assert!(connection_problem([&b"keep-alive"[..], b"host"]).is_some());
        assert_eq!(connection_problem([&b"a,b,c"[..], b"d,e,f,g,h,i"]), None);
    }
}
