//! Writing the local limiter's credit spends with every usage flush
//! (finding B13; what they are: [`crate::limiter::credits::spends`]). One
//! transaction per flush; what fails is kept for the next one. A write
//! that times out after its commit is written again: the balance then errs
//! against the customer (spent twice), never in its favour.

use std::time::Duration;

use tollgate_core::db::Db;

use super::buffer::{bounded, FlushError};
use crate::limiter::credits::CreditBook;

/// Write what `book` spent since the last flush.
pub async fn write_spends(db: &Db, book: &CreditBook, limit: Duration) -> Result<(), FlushError> {
    // No rebuild of the balances while spends are taken but not written.
    let _writing = book.spends.writing().await;
    let taken = book.spends.take();
    if taken.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = taken.iter().filter_map(|p| p.to_row()).collect();
    match bounded(limit, db.record_spends(book.spends.instance(), &rows)).await {
        Ok(()) => Ok(()),
        Err(e) => {
            book.spends.restore(taken);
            Err(e)
        }
    }
}
