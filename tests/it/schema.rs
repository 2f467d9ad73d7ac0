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

/// An attempt is found by (delivery_id, attempt_number); `id` is only a paging cursor, served
/// by attempts_webhook_idx. An index on `id` alone would be one more insert per attempt.
#[tokio::test]
async fn attempts_are_keyed_by_delivery_and_number_with_no_index_on_id_alone() {
    let db = TestDatabase::create().await;
    let definitions: Vec<String> = db
        .db
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'attempts' ORDER BY indexname",
            &[],
        )
        .await
        .expect("pg_indexes")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        definitions.iter().all(|d| !d.ends_with("(id)")),
        "no index on attempts (id): {definitions:?}"
    );
    assert!(
        definitions
            .iter()
            .any(|d| d.starts_with("CREATE UNIQUE INDEX attempts_pkey")
                && d.ends_with("(delivery_id, attempt_number)")),
        "the primary key is (delivery_id, attempt_number): {definitions:?}"
    );
}

/// Ids are compared byte by byte ("C" collation), not through the locale, in the indexes every
/// batch of outcomes inserts into.
#[tokio::test]
async fn id_columns_use_the_c_collation() {
    let db = TestDatabase::create().await;
    let rows = db
        .db
        .query(
            "SELECT table_name::text, column_name::text, collation_name::text
             FROM information_schema.columns
             WHERE (table_name, column_name) IN
                 (('events', 'id'), ('deliveries', 'event_id'), ('deliveries', 'company_id'))",
            &[],
        )
        .await
        .expect("columns");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let (table, column, collation): (String, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(collation.as_deref(), Some("C"), "{table}.{column}");
    }
}
