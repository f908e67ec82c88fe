//! The schema as the binary carries it: each backend's migrations embedded (what
//! `sqlx::migrate!` embeds), and rows read into structs by column name (what
//! `#[derive(sqlx::FromRow)]` generates). Both without sqlx's proc-macro crate: building
//! it compiles a second copy of both database drivers and Tokio for the compiler, a
//! minute of CPU in every build from nothing.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// SQLite's migrations (issuer/migrations/sqlite), in order.
pub(super) const SQLITE: Embedded = Embedded(&[
    (
        "0001_init.sql",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_identity_binding.sql",
        include_str!("../../migrations/sqlite/0002_identity_binding.sql"),
    ),
    (
        "0003_store_at_scale.sql",
        include_str!("../../migrations/sqlite/0003_store_at_scale.sql"),
    ),
    (
        "0004_audit_checkpoints.sql",
        include_str!("../../migrations/sqlite/0004_audit_checkpoints.sql"),
    ),
    (
        "0005_certificate_sign_entry.sql",
        include_str!("../../migrations/sqlite/0005_certificate_sign_entry.sql"),
    ),
]);

/// PostgreSQL's migrations (issuer/migrations/postgres), in order.
pub(super) const POSTGRES: Embedded = Embedded(&[
    (
        "0001_init.sql",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_identity_binding.sql",
        include_str!("../../migrations/postgres/0002_identity_binding.sql"),
    ),
    (
        "0003_store_at_scale.sql",
        include_str!("../../migrations/postgres/0003_store_at_scale.sql"),
    ),
    (
        "0004_audit_checkpoints.sql",
        include_str!("../../migrations/postgres/0004_audit_checkpoints.sql"),
    ),
    (
        "0005_certificate_sign_entry.sql",
        include_str!("../../migrations/postgres/0005_certificate_sign_entry.sql"),
    ),
]);

/// Migration files as (file name, SQL), read as sqlx reads a migrations folder:
/// `VERSION_DESCRIPTION.sql`, underscores in the description read as spaces, a file
/// starting `-- no-transaction` run outside a transaction; the checksum (SHA-384 of the
/// SQL) is sqlx's, so databases migrated by earlier builds match.
#[derive(Clone, Copy, Debug)]
pub(super) struct Embedded(&'static [(&'static str, &'static str)]);

impl Embedded {
    /// The migrator of these migrations.
    pub(super) async fn migrator(self) -> Result<Migrator, sqlx::migrate::MigrateError> {
        Migrator::new(self).await
    }

    fn migrations(self) -> Result<Vec<Migration>, BoxDynError> {
        self.0
            .iter()
            .map(|&(file, sql)| {
                let stem = file
                    .strip_suffix(".sql")
                    .ok_or_else(|| format!("migration {file:?}: not a .sql file"))?;
                let (version, description) = stem
                    .split_once('_')
                    .ok_or_else(|| format!("migration {file:?}: no VERSION_DESCRIPTION"))?;
                let version = version
                    .parse()
                    .map_err(|_| format!("migration {file:?}: version is not a number"))?;
                Ok(Migration::new(
                    version,
                    Cow::Owned(description.replace('_', " ")),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    sql.starts_with("-- no-transaction"),
                ))
            })
            .collect()
    }
}

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> futures::future::BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { self.migrations() })
    }
}

/// A struct whose fields are read from the columns of the same names, on either
/// backend: the struct as written, and its `impl sqlx::FromRow`.
macro_rules! from_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
        where
            &'static str: sqlx::ColumnIndex<R>,
            $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?,)*
                })
            }
        }
    };
}
pub(crate) use from_row;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The embedded migrations are the folders' files, whole and in order, with the
    /// versions, descriptions, checksums and transaction modes sqlx gives them when it
    /// reads the folders (as `sqlx::migrate!` did): a new file must be added here too.
    #[tokio::test]
    async fn embedded_migrations_are_the_folders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for (folder, embedded) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let from_folder = Migrator::new(root.join(folder)).await.unwrap();
            let from_binary = Migrator::new(embedded).await.unwrap();
            let read = |m: &Migrator| -> Vec<_> {
                m.iter()
                    .map(|m| {
                        (
                            m.version,
                            m.description.to_string(),
                            m.sql.to_string(),
                            m.checksum.to_vec(),
                            m.no_tx,
                        )
                    })
                    .collect()
            };
            assert_eq!(read(&from_binary), read(&from_folder), "{folder}");
            assert!(from_folder.iter().count() >= 4, "{folder}");
        }
    }
}
