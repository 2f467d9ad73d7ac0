//! Properties of the migrated schema that the write path's cost depends on.

use crate::harness::TestDatabase;

/// New delivery and attempt ids are always the largest, so each listing index must take them
/// at its right end (B-tree fast path, uneven splits for ascending keys); newest-first
/// listings scan it backwards. A `DESC` index costs every batch more splits and pages.
#[tokio::test]
async fn listing_indexes_are_ascending() {
    let db = TestDatabase::create().await;
    let rows = db
        .db
        .query(
            "SELECT indexname, indexdef FROM pg_indexes
             WHERE indexname IN ('deliveries_webhook_idx', 'deliveries_company_idx',
                                 'attempts_webhook_idx')",
            &[],
        )
        .await
        .expect("pg_indexes");
    assert_eq!(rows.len(), 3, "every listing index exists");
    for row in rows {
        let (name, definition): (String, String) = (row.get(0), row.get(1));
        assert!(
            definition.ends_with(", id)"),
            "{name} should end in an ascending id: {definition}"
        );
    }
}

/// Headers are stored as sent (`json`), not parsed into a `jsonb` tree on every insert: the
/// log only ever reads them back whole.
#[tokio::test]
async fn attempt_headers_are_stored_as_json_text() {
    let db = TestDatabase::create().await;
    let types: Vec<String> = db
        .db
        .query(
            "SELECT data_type FROM information_schema.columns
             WHERE table_name = 'attempts'
               AND column_name IN ('request_headers', 'response_headers')",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(types, ["json", "json"]);
}
