//! The conformance suite, against every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory {
    use passerelle_store::memory::MemoryStore;

    passerelle_store::store_conformance_tests!(async { (MemoryStore::new(), ()) });
}

mod sqlite {
    use passerelle_store::sqlite::SqliteStore;

    passerelle_store::store_conformance_tests!(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path()).expect("open");
        (store, dir)
    });
}

/// On a schema of its own per test, dropped at the end; skipped (or failed,
/// under `CI`) without a PostgreSQL server.
mod postgres {
    use passerelle_store::postgres::testing::fresh_schema;

    passerelle_store::store_conformance_tests!(maybe async {
        let schema = fresh_schema().await?;
        let store = schema.store(4).await;
        Some((store, schema))
    });
}
