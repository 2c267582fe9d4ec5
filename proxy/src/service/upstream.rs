//! What the upstream is sent: the routed path (less `strip_prefix`), the
//! header edits of [`crate::forward`], the trace context and `Host`; and
//! the one upstream answer refused outright (an unasked-for `101`).

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;
use tollgate_core::net;
use tollgate_core::trace::OsIds;

use crate::forward::{self, Forwarding};
use crate::header_edit;
use crate::router;
use crate::telemetry;

use super::{is_tls, Ctx};

/// Edit the request the upstream is sent.
pub(super) fn edit(
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    let (Some(route), Some(cfg), Some(inbound)) = (&ctx.route, &ctx.config, &ctx.inbound) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no route selected",
        ));
    };
    // Exactly the canonical path that was routed on (less strip_prefix);
    // most requests already carry it as sent, and keep their target.
    let as_sent = route.route.strip_prefix.is_none()
        && upstream_request.uri.authority().is_none()
        && forward::same_target(
            upstream_request.raw_path(),
            &inbound.canonical.path,
            inbound.canonical.query.as_deref(),
        );
    if !as_sent {
        let path = match &route.route.strip_prefix {
            Some(strip) => router::strip_path_case(
                &inbound.canonical.path,
                strip,
                route.route.case_insensitive,
            ),
            None => inbound.canonical.path.as_str().into(),
        };
        let target = match &inbound.canonical.query {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        match target.parse::<http::Uri>() {
            Ok(u) => upstream_request.set_uri(u),
            Err(e) => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(400),
                    format!("cannot rewrite path: {e}"),
                ))
            }
        }
    }
    let mut id_buf = [0u8; 20];
    let buf = &mut id_buf;
    let key_id = ctx.key.as_ref().map(move |k| forward::id_text(k.id, buf));
    let forwarding = Forwarding {
        key_header: &cfg.config.proxy.key_header,
        key_from_bearer: ctx.key_from_bearer,
        allow_method_override: route.route.allow_method_override,
        websocket: ctx.websocket,
        client: &inbound.client,
        proto: net::forwarded_proto(
            inbound.client.peer_trusted,
            // Only a trusted peer's is read.
            inbound
                .client
                .peer_trusted
                .then(|| session.req_header().headers.get("x-forwarded-proto"))
                .flatten()
                .and_then(|v| v.to_str().ok()),
            is_tls(session),
        ),
        host: inbound.host.as_ref(),
        request_id: ctx.request_id.header(),
        client_request_id: ctx.client_request_id.as_deref(),
        key_id,
        plan: ctx.key.as_ref().and(ctx.plan.as_deref()),
        identity: crate::identities::header_value(ctx.identity.as_deref()),
    };
    let trace = cfg
        .config
        .telemetry
        .trace_context
        .then(|| telemetry::start(session.req_header(), &mut OsIds));
    // `Host`: the target's, unless the route keeps the client's.
    let host = match &ctx.target {
        Some(picked) if !route.upstream.config.preserve_host => match &picked.host_header {
            Some(host) => Some(host.clone()),
            None => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    format!("no Host header value for target {}", picked.target),
                ))
            }
        },
        _ => None,
    };
    header_edit::request(upstream_request, |headers| {
        forward::apply(headers, &forwarding)?;
        if let Some(t) = &trace {
            telemetry::propagate(t, headers)?;
        }
        if let Some(host) = host {
            headers.insert(http::header::HOST, host);
        }
        Ok(())
    })?;
    ctx.trace = trace;
    Ok(())
}

/// Refuse a `101 Switching Protocols` to a request whose upgrade was not
/// forwarded (anything but a WebSocket handshake on a `websocket` route):
/// the client asked for no protocol switch, and a tunnel would bypass
/// routes, keys and limits. Pingora 0.9 only refuses a `101` when the
/// client's and the upstream's requests disagree about the upgrade; with
/// `Upgrade` absent from both it passed the `101` on and then failed the
/// connection. Answered 502 (an upstream failure) and closed.
pub(super) fn refuse_unasked_switch(upstream_response: &ResponseHeader, ctx: &Ctx) -> Result<()> {
    if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS && !ctx.websocket {
        return Err(Error::explain(
            ErrorType::HTTPStatus(502),
            "the upstream switched protocols on a request that asked for no upgrade",
        )
        .into_up());
    }
    Ok(())
}
