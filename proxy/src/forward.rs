//! What the upstream is told, and what it is not: the API key never reaches
//! it (header or `Authorization: Bearer`, on every route; nor any header
//! carrying a valid key in another form, see [`keys::carries_key`]), nor the proxy's own
//! `X-Tollgate-*` headers as sent by a client, nor an untrusted client's
//! forwarding headers, method overrides or path overrides. Header names are
//! compared as CGI-style servers see them: case-insensitively and with `_`
//! equal to `-` (`X_Tollgate_Key_Id` reaches a WSGI app as
//! `HTTP_X_TOLLGATE_KEY_ID`).

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr, Result};
use tollgate_core::keys;
use tollgate_core::net::ClientAddress;

pub use tollgate_core::headers::METHOD_OVERRIDE_HEADERS;
use tollgate_core::headers::{
    cgi, is_client_address_header, FRAMING_HEADERS, OWN_PREFIX, PATH_OVERRIDE_HEADERS,
    SET_BY_PROXY, UPGRADE_HEADERS,
};

/// The methods a request's override headers name (any spelling, upper-cased;
/// a value that is not text counts as the empty method, taken by no route).
pub fn overridden_methods(req: &RequestHeader) -> impl Iterator<Item = String> + '_ {
    req.headers
        .iter()
        .filter(|(name, _)| METHOD_OVERRIDE_HEADERS.contains(&cgi(name.as_str()).as_ref()))
        .map(|(_, v)| v.to_str().unwrap_or_default().trim().to_ascii_uppercase())
}

/// Whether a request target as sent (`raw`) is exactly `path` plus `?query`.
pub fn same_target(raw: &[u8], path: &str, query: Option<&str>) -> bool {
    let Some(rest) = raw.strip_prefix(path.as_bytes()) else {
        return false;
    };
    match query {
        None => rest.is_empty(),
        Some(q) => rest.first() == Some(&b'?') && &rest[1..] == q.as_bytes(),
    }
}

/// A key id as decimal text, written into `buf` (no allocation).
pub fn id_text(id: i64, buf: &mut [u8; 20]) -> &str {
    let mut n = id.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if id < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    // ASCII digits and '-' only.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// What to tell the upstream.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// `proxy.key_header`, lower case.
    pub key_header: &'a str,
    /// The key came as `Authorization: Bearer`: drop that header whatever it holds.
    pub key_from_bearer: bool,
    pub allow_method_override: bool,
    /// A WebSocket handshake on a `websocket` route: `Upgrade: websocket`
    /// and `Connection: Upgrade` go on.
    pub websocket: bool,
    pub client: &'a ClientAddress,
    pub proto: &'static str,
    /// The host the client asked for, lower case (see `edge::Inbound`).
    pub host: Option<&'a HeaderValue>,
    pub request_id: HeaderValue,
    pub client_request_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub plan: Option<&'a str>,
    /// The key's identity's external id (validated: header-safe).
    pub identity: Option<&'a str>,
}

/// The names of the headers to drop from `headers` (a few at most on an
/// ordinary request: the key header; kept on the stack).
pub fn to_remove(headers: &HeaderMap, f: &Forwarding<'_>) -> smallvec::SmallVec<[HeaderName; 4]> {
    let key = cgi(f.key_header);
    let mut out = smallvec::SmallVec::<[HeaderName; 4]>::new();
    for (name, value) in headers.iter() {
        let n = cgi(name.as_str());
        let n = n.as_ref();
        let respelled = name.as_str().contains('_');
        let drop = n == key
            || n.starts_with(OWN_PREFIX)
            || (respelled && FRAMING_HEADERS.contains(&n))
            || (UPGRADE_HEADERS.contains(&n) && !(f.websocket && n == "upgrade" && !respelled))
            || SET_BY_PROXY.contains(&n)
            || PATH_OVERRIDE_HEADERS.contains(&n)
            || (!f.allow_method_override && METHOD_OVERRIDE_HEADERS.contains(&n))
            || (!f.client.peer_trusted && is_client_address_header(n))
            || (n == "authorization"
                && (f.key_from_bearer || crate::auth::is_bearer_key(value.as_bytes())))
            || keys::carries_key(value.as_bytes())
            // A key as the name arrives lower-cased (round 15 re-check).
            || keys::key_shaped(name.as_str().as_bytes());
        if drop && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// `http` and `https` as shared values (no copy, no check per request).
fn proto_value(proto: &str) -> Result<HeaderValue> {
    const HTTP: HeaderValue = HeaderValue::from_static("http");
    const HTTPS: HeaderValue = HeaderValue::from_static("https");
    match proto {
        "http" => Ok(HTTP),
        "https" => Ok(HTTPS),
        other => value(other),
    }
}

/// A header value from text the proxy decided on (checked: a byte a header
/// cannot carry is an error, never a bad header on the wire).
pub fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).or_err(ErrorType::InvalidHTTPHeader, "invalid header value")
}

/// The names the proxy sets, built at compile time.
pub mod names {
    use http::HeaderName;

    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
    pub const X_TOLLGATE_KEY_ID: HeaderName = HeaderName::from_static("x-tollgate-key-id");
    pub const X_TOLLGATE_PLAN: HeaderName = HeaderName::from_static("x-tollgate-plan");
    pub const X_TOLLGATE_IDENTITY: HeaderName = HeaderName::from_static("x-tollgate-identity");
}

/// Rewrite the upstream request's headers.
pub fn apply(headers: &mut HeaderMap, f: &Forwarding<'_>) -> Result<()> {
    let trusted_xfh = if f.client.peer_trusted {
        headers
            .get(names::X_FORWARDED_HOST)
            .filter(|v| v.to_str().is_ok_and(tollgate_core::net::is_host))
            // Kept past `to_remove`: one carrying a key is not passed on.
            .filter(|v| !keys::carries_key(v.as_bytes()))
            .cloned()
    } else {
        None
    };
    for name in to_remove(headers, f) {
        headers.remove(&name);
    }
    // Room for what is set below (and Host, trace context): the map grows
    // once, not once per insert that crosses its capacity.
    headers.reserve(10);
    headers.insert(names::X_FORWARDED_FOR, value(&f.client.forwarded_for)?);
    headers.insert(names::X_FORWARDED_PROTO, proto_value(f.proto)?);
    match (trusted_xfh, f.host) {
        (Some(v), _) => {
            headers.insert(names::X_FORWARDED_HOST, v);
        }
        (None, Some(h)) => {
            headers.insert(names::X_FORWARDED_HOST, h.clone());
        }
        (None, None) => {}
    }
    headers.insert(names::X_REQUEST_ID, f.request_id.clone());
    if f.websocket {
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    if let Some(id) = f.client_request_id {
        headers.insert(names::X_CLIENT_REQUEST_ID, value(id)?);
    }
    if let Some(id) = f.key_id {
        headers.insert(names::X_TOLLGATE_KEY_ID, value(id)?);
        if let Some(plan) = f.plan {
            headers.insert(names::X_TOLLGATE_PLAN, value(plan)?);
        }
        if let Some(identity) = f.identity {
            headers.insert(names::X_TOLLGATE_IDENTITY, value(identity)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: bool) -> ClientAddress {
        ClientAddress {
            client: "203.0.113.5".parse().expect("ip"),
            peer_trusted: trusted,
            forwarded_for: "203.0.113.5".into(),
        }
    }

    /// [`apply`] as the proxy calls it, on a request header.
    fn apply_to(r: &mut RequestHeader, f: &Forwarding<'_>) -> Result<()> {
        crate::header_edit::request(r, |h| apply(h, f))
    }

    fn names(r: &RequestHeader) -> Vec<String> {
        let mut v: Vec<String> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v
    }

    static API_EXAMPLE: HeaderValue = HeaderValue::from_static("api.example");

    fn base<'a>(c: &'a ClientAddress) -> Forwarding<'a> {
        Forwarding {
            key_header: "x-api-key",
            key_from_bearer: false,
            allow_method_override: false,
            websocket: false,
            client: c,
            proto: "http",
            host: Some(&API_EXAMPLE),
            request_id: HeaderValue::from_static("rid"),
            client_request_id: None,
            key_id: None,
            plan: None,
            identity: None,
        }
    }

    #[test]
    fn the_identity_goes_with_the_key_and_a_forged_one_is_dropped() {
        let c = client(false);
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("X-Tollgate-Identity", "forged").expect("h");
        r.insert_header("x_tollgate_identity", "forged").expect("h");
        let f = Forwarding {
            key_id: Some("7"),
            identity: Some("cus_1"),
            ..base(&c)
        };
        apply_to(&mut r, &f).expect("apply");
        let got: Vec<_> = r.headers.get_all("x-tollgate-identity").iter().collect();
        assert_eq!(got, vec!["cus_1"]);
        assert!(r.headers.get("x_tollgate_identity").is_none());
        // No key: no identity either; a forged one is still dropped.
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.insert_header("X-Tollgate-Identity", "forged").expect("h");
        apply_to(&mut r, &base(&c)).expect("apply");
        assert!(r.headers.get("x-tollgate-identity").is_none());
    }

    #[test]
    fn key_and_own_headers_go_in_every_spelling() {
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        for (n, v) in [
            ("X-Api-Key", "tg_a"),
            ("x_api_key", "tg_b"),
            ("Authorization", "bearer tg_c"),
            ("X-Tollgate-Key-Id", "forged"),
            ("X_Tollgate_Plan", "forged"),
            ("x-tollgate-anything", "forged"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-Original-URL", "/secret"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Client-Request-Id", "forged"),
            ("Forwarded-For", "6.6.6.6"),
            ("X-Forwarded", "for=6.6.6.6"),
            ("Fastly-Client-IP", "6.6.6.6"),
            ("X-Original-Method", "DELETE"),
            ("X-Envoy-Original-Path", "/secret"),
            ("Content_Length", "50"),
            ("Transfer_Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("accept", "*/*"),
        ] {
            r.append_header(n.to_string(), v).expect("header");
        }
        let c = client(false);
        let mut f = base(&c);
        f.key_id = Some("7");
        f.plan = Some("free");
        apply_to(&mut r, &f).expect("apply");
        assert_eq!(
            names(&r),
            vec![
                "accept",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id",
                "x-tollgate-key-id",
                "x-tollgate-plan"
            ]
        );
        assert_eq!(r.headers["x-tollgate-key-id"], "7");
        assert_eq!(r.headers["x-forwarded-for"], "203.0.113.5");
    }

    #[test]
    fn same_target_is_exact() {
        assert!(same_target(b"/a/b", "/a/b", None));
        assert!(same_target(b"/a?x=1", "/a", Some("x=1")));
        assert!(same_target(b"/a?", "/a", Some("")));
        for (raw, path, q) in [
            (&b"/a/b"[..], "/a", None),
            (b"/a?x=1", "/a", None),
            (b"/a", "/a", Some("")),
            (b"/a?x=1", "/a", Some("x=2")),
            (b"/a/../b", "/b", None),
            (b"/%61", "/a", None),
            (b"http://h/a", "/a", None),
            (b"/a#f", "/a", None),
        ] {
            assert!(!same_target(raw, path, q), "{raw:?} {path} {q:?}");
        }
    }

    #[test]
    fn id_text_is_the_decimal_id() {
        let mut buf = [0u8; 20];
        for id in [0, 1, 7, 10, 42, 1_000_000, -1, -90, i64::MAX, i64::MIN] {
            assert_eq!(id_text(id, &mut buf), id.to_string());
        }
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade_and_nothing_else_does() {
        let c = client(false);
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        for (n, v) in [
            ("Upgrade", "websocket"),
            ("Upgrade_", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            r.append_header(n.to_string(), v).expect("header");
        }
        let mut f = base(&c);
        f.websocket = true;
        apply_to(&mut r, &f).expect("apply");
        let upgrade: Vec<_> = r.headers.get_all("upgrade").iter().collect();
        assert_eq!(upgrade, ["websocket"]);
        assert_eq!(r.headers["connection"], "Upgrade");
        assert!(!r.headers.contains_key("http2-settings"));
        assert!(r.headers.contains_key("sec-websocket-key"));
    }

    #[test]
    fn upstream_authorization_survives_unless_it_carried_the_key() {
        let c = client(false);
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.append_header("Authorization", "Bearer eyJhbGciOi")
            .expect("h");
        apply_to(&mut r, &base(&c)).expect("apply");
        assert!(r.headers.contains_key("authorization"));
        let mut f = base(&c);
        f.key_from_bearer = true;
        apply_to(&mut r, &f).expect("apply");
        assert!(!r.headers.contains_key("authorization"));
    }

    #[test]
    fn trusted_peers_keep_their_forwarding_headers() {
        let c = ClientAddress {
            forwarded_for: "203.0.113.5, 10.0.0.1".into(),
            ..client(true)
        };
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.append_header("X-Forwarded-Host", "public.example")
            .expect("h");
        r.append_header("X-Real-IP", "203.0.113.5").expect("h");
        r.append_header("X-HTTP-Method-Override", "PUT").expect("h");
        let mut f = base(&c);
        f.allow_method_override = true;
        apply_to(&mut r, &f).expect("apply");
        assert_eq!(r.headers["x-forwarded-host"], "public.example");
        assert_eq!(r.headers["x-forwarded-for"], "203.0.113.5, 10.0.0.1");
        assert_eq!(r.headers["x-real-ip"], "203.0.113.5");
        assert_eq!(r.headers["x-http-method-override"], "PUT");
    }

    /// Round 15 (black-box): a value kept past the key scan and set again
    /// must not bring the key back.
    #[test]
    fn a_trusted_forwarded_host_carrying_a_key_is_not_passed_on() {
        let key = keys::generate().expect("rng").plain;
        let c = client(true);
        let mut r = RequestHeader::build("GET", b"/", None).expect("req");
        r.append_header("X-Forwarded-Host", key.as_str())
            .expect("h");
        apply_to(&mut r, &base(&c)).expect("apply");
        // The request's own Host instead.
        assert_eq!(r.headers["x-forwarded-host"], "api.example");
    }
}
