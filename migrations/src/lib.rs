//! recall's SQL migrations, embedded at compile time. The binary (`recall migrate`, `recall serve`) and
//! every test (`#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]`) use this one migrator.
//! Migrations are append-only: a shipped file is never edited, a change is a new file.

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql");
