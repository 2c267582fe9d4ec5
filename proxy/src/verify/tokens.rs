//! The service tokens the verify listener accepts: their hashes, loaded from
//! the database at start and again every `storage.key_refresh`, so a token
//! deleted in the admin API or the CLI stops working within that interval
//! (plus one database round trip). While the database cannot be read, the
//! last set stays.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tollgate_core::db::Db;
use tollgate_core::service_tokens::{self, TokenHash};

use crate::state::State;

/// The accepted token hashes.
#[derive(Debug, Default)]
pub struct TokenSet {
    hashes: ArcSwap<HashSet<TokenHash>>,
}

impl TokenSet {
    /// Whether `presented` is a current token.
    pub fn accepts(&self, presented: &str) -> bool {
        service_tokens::parse(presented).is_some_and(|h| self.hashes.load().contains(&h))
    }

    pub fn replace(&self, hashes: Vec<TokenHash>) {
        self.hashes.store(Arc::new(hashes.into_iter().collect()));
    }

    pub fn len(&self) -> usize {
        self.hashes.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long one load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts while loading fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The background service that keeps a [`TokenSet`] current.
pub struct TokenRefresh {
    pub tokens: Arc<TokenSet>,
    pub state: Arc<State>,
    pub database_url: String,
}

async fn load_once(db: &mut Option<Db>, url: &str, tokens: &TokenSet) -> Result<(), String> {
    if db.is_none() {
        let connected = tokio::time::timeout(LOAD_TIMEOUT, Db::connect(url))
            .await
            .map_err(|_| "connecting to the database timed out".to_string())?
            .map_err(|e| e.to_string())?;
        *db = Some(connected);
    }
    let Some(conn) = db.as_ref() else {
        return Err("no database connection".into());
    };
    match tokio::time::timeout(LOAD_TIMEOUT, conn.service_token_hashes()).await {
        Ok(Ok(hashes)) => {
            tokens.replace(hashes);
            Ok(())
        }
        Ok(Err(e)) => {
            *db = None;
            Err(e.to_string())
        }
        Err(_) => {
            *db = None;
            Err("loading the service tokens timed out".into())
        }
    }
}

#[async_trait]
impl BackgroundService for TokenRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut db = None;
        let mut failures = 0u32;
        loop {
            match load_once(&mut db, &self.database_url, &self.tokens).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!("service token refresh failed, the last set stays: {e}");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            // The interval as reloaded meanwhile, too.
            let wait = || {
                let every = self.state.config.load().config.storage.key_refresh;
                if failures == 0 {
                    every
                } else {
                    every
                        .saturating_mul(1u32 << failures.min(6))
                        .min(MAX_BACKOFF.max(every))
                }
            };
            tokio::select! {
                _ = crate::period::wait(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Some(db) = db {
            db.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_tokens_are_accepted() {
        let set = TokenSet::default();
        let a = service_tokens::generate().expect("random");
        let b = service_tokens::generate().expect("random");
        assert!(!set.accepts(&a.plain));
        set.replace(vec![a.hash]);
        assert!(set.accepts(&a.plain));
        assert!(!set.accepts(&b.plain));
        assert!(!set.accepts(""));
        assert!(!set.accepts(&a.plain[..a.plain.len() - 1]));
        set.replace(vec![b.hash]);
        assert!(!set.accepts(&a.plain));
        assert!(set.accepts(&b.plain));
    }
}
