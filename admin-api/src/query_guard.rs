//! Every `/api` operation refuses a query parameter it does not take, the
//! way [`crate::extract::ApiQuery`] does: a 400 `malformed-request` naming
//! it, with the parameters the operation takes ("none" for most). Applied
//! once, as a route layer where [`crate::app::api_router`] is built, so a
//! new endpoint cannot forget it: `DELETE /api/keys/1?dry_run=true` must
//! never delete (black-box round 13).
//!
//! What an operation takes is what the OpenAPI document lists for it (the
//! same `IntoParams` lists `ApiQuery` reads); an operation the document
//! does not list takes none.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::OpenApi;

use crate::extract::unknown_parameter;
use crate::openapi::ApiDoc;

/// (method in lower case, route path as axum matches it) → query parameters.
type Accepted = HashMap<(String, String), Vec<String>>;

fn accepted() -> &'static Accepted {
    static MAP: OnceLock<Accepted> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = Accepted::new();
        for (path, item) in ApiDoc::openapi().paths.paths {
            let ops: [(&str, Option<Operation>); 5] = [
                ("get", item.get),
                ("post", item.post),
                ("put", item.put),
                ("patch", item.patch),
                ("delete", item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let names = op
                    .parameters
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                    .map(|p| p.name)
                    .collect();
                map.insert((method.to_string(), path.clone()), names);
            }
        }
        map
    })
}

/// The query parameters the operation `method` `route` takes.
pub fn takes(method: &Method, route: &str) -> &'static [String] {
    let method = if method == Method::HEAD {
        "get".to_string()
    } else {
        method.as_str().to_ascii_lowercase()
    };
    accepted()
        .get(&(method, route.to_string()))
        .map_or(&[], Vec::as_slice)
}

/// Route layer: answer 400 to a query parameter the matched operation does
/// not take, before its handler (and its role check) runs.
pub async fn refuse_unknown(req: Request, next: Next) -> Response {
    if let Some(raw) = req.uri().query() {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let takes = takes(req.method(), route);
        if let Some((name, _)) = form_urlencoded::parse(raw.as_bytes())
            .find(|(name, _)| !takes.iter().any(|t| t == name))
        {
            return unknown_parameter(&name, takes).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_lists_are_read() {
        assert!(takes(&Method::DELETE, "/api/keys/{id}").is_empty());
        assert!(takes(&Method::POST, "/api/keys/{id}/rotate").is_empty());
        let list = takes(&Method::GET, "/api/keys");
        assert!(list.iter().any(|p| p == "per_page"), "{list:?}");
        assert_eq!(takes(&Method::HEAD, "/api/keys"), list);
        assert!(takes(&Method::GET, "/api/nothing").is_empty());
    }
}
