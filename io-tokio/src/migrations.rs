//! Users' migrations from a directory of SQL files, read once at start:
//! [`migrations_from_dir`] turns `migrations/0001_points.sql`, `0002_...` into the
//! `Database.Migrate` effect a program performs (on PostgreSQL, or on the in-memory
//! database, which applies the same files).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use effectful::effect::{Migrate, MigrationFileError};

/// The largest migration file read (16 MiB): checked before reading it.
pub const MAX_MIGRATION_FILE_BYTES: u64 = 16 << 20;
/// The most migration files in one directory.
pub const MAX_MIGRATION_FILES: usize = 10_000;

/// Reads every `*.sql` file directly in `dir` as a migration
/// ([`SqlMigration::from_file`](effectful::effect::SqlMigration::from_file):
/// `0002_add_points.sql` is version 2) and gives them as one [`Migrate`], in version
/// order. Other files (a README, an editor's backup), hidden files and
/// subdirectories are left alone; a `.sql` file whose name is not
/// `VERSION_DESCRIPTION.sql`, two files of one version, a file that is not UTF-8 or
/// is larger than [`MAX_MIGRATION_FILE_BYTES`] are refused, naming the file.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let migrate = effectful_tokio::migrations_from_dir("migrations")?;
/// // In a program: `fx.perform(migrate.clone()).await?` answers the versions it applied.
/// # Ok(()) }
/// ```
pub fn migrations_from_dir(dir: impl AsRef<Path>) -> Result<Migrate, MigrationDirError> {
    let dir = dir.as_ref();
    let at = |source: std::io::Error| MigrationDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at)? {
        let entry = entry.map_err(at)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            // Not UTF-8: it cannot be `VERSION_DESCRIPTION.sql`; say so if it looks
            // like one.
            if path.extension().is_some_and(|e| e == "sql") {
                return Err(MigrationDirError::Invalid {
                    path,
                    why: "its name is not UTF-8".into(),
                });
            }
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".sql") {
            continue;
        }
        let file = |source| MigrationDirError::Io {
            path: path.clone(),
            source,
        };
        // Follows a symlink, as reading does.
        let meta = std::fs::metadata(&path).map_err(file)?;
        if meta.is_dir() {
            continue;
        }
        if meta.len() > MAX_MIGRATION_FILE_BYTES {
            return Err(MigrationDirError::Invalid {
                path,
                why: format!(
                    "it is {} bytes, over the limit of {MAX_MIGRATION_FILE_BYTES}",
                    meta.len()
                ),
            });
        }
        if files.len() == MAX_MIGRATION_FILES {
            return Err(MigrationDirError::Invalid {
                path: dir.to_path_buf(),
                why: format!("it holds more than {MAX_MIGRATION_FILES} migration files"),
            });
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_MIGRATION_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(file)?;
        if bytes.len() as u64 > MAX_MIGRATION_FILE_BYTES {
            return Err(MigrationDirError::Invalid {
                path,
                why: format!("it grew over the limit of {MAX_MIGRATION_FILE_BYTES} bytes"),
            });
        }
        let sql = String::from_utf8(bytes).map_err(|e| MigrationDirError::Invalid {
            path: path.clone(),
            why: format!("it is not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        })?;
        files.push((name, sql));
    }
    Migrate::from_files(files).map_err(|source| MigrationDirError::File {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Why a migrations directory was refused.
#[derive(Debug)]
pub enum MigrationDirError {
    /// The directory or a file in it could not be read.
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a migration this reads.
    Invalid {
        /// The file (or the directory).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A file's name, or two files' versions.
    File {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        source: MigrationFileError,
    },
}

impl fmt::Display for MigrationDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationDirError::Io { path, source } => {
                write!(f, "cannot read migrations at {}: {source}", path.display())
            }
            MigrationDirError::Invalid { path, why } => {
                write!(f, "migration {} refused: {why}", path.display())
            }
            MigrationDirError::File { dir, source } => {
                write!(f, "migrations in {}: {source}", dir.display())
            }
        }
    }
}

impl std::error::Error for MigrationDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MigrationDirError::Io { source, .. } => Some(source),
            MigrationDirError::File { source, .. } => Some(source),
            MigrationDirError::Invalid { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files to write: name and bytes.
    type Files<'a> = &'a [(&'a str, &'a [u8])];

    /// A fresh directory holding `files`.
    fn dir_with(tag: &str, files: Files<'_>) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("effectful-migrations-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("written");
        }
        dir
    }

    #[test]
    fn sql_files_are_read_in_version_order_and_other_files_are_left_alone() {
        let dir = dir_with(
            "ok",
            &[
                ("0002_seed.sql", b"INSERT INTO p VALUES (1)"),
                ("0001_create.sql", b"CREATE TABLE p (n int)"),
                ("README.md", b"not a migration"),
                (".0003_hidden.sql", b"hidden"),
                ("0004_backup.sql~", b"a backup"),
            ],
        );
        std::fs::create_dir(dir.join("0005_a_directory.sql")).expect("a subdirectory");
        let migrate = migrations_from_dir(&dir).expect("read");
        let seen: Vec<(i64, &str, &str)> = migrate
            .migrations
            .iter()
            .map(|m| (m.version, m.name.as_str(), m.sql.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "create", "CREATE TABLE p (n int)"),
                (2, "seed", "INSERT INTO p VALUES (1)")
            ]
        );
        std::fs::remove_dir_all(dir).expect("removed");
    }

    #[test]
    fn a_bad_directory_or_file_is_refused_naming_it() {
        let cases: [(&str, Files<'_>, &str); 4] = [
            ("name", &[("points.sql", b"")], "\"points.sql\""),
            (
                "twice",
                &[("1_a.sql", b""), ("01_b.sql", b"")],
                "both have version 1",
            ),
            (
                "utf8",
                &[("1_a.sql", b"SELECT '\xff'")],
                "not UTF-8 (at byte 8)",
            ),
            ("empty-ok", &[], ""),
        ];
        for (tag, files, says) in cases {
            let dir = dir_with(tag, files);
            match migrations_from_dir(&dir) {
                Ok(migrate) => assert!(says.is_empty() && migrate.migrations.is_empty()),
                Err(e) => assert!(
                    !says.is_empty() && e.to_string().contains(says),
                    "{tag}: {e}"
                ),
            }
            std::fs::remove_dir_all(dir).expect("removed");
        }
        let missing = std::env::temp_dir().join("effectful-migrations-that-do-not-exist");
        let error = migrations_from_dir(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read migrations at") && error.contains("that-do-not-exist"),
            "{error}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = dir_with("big", &[]);
        let file = std::fs::File::create(dir.join("1_big.sql")).expect("created");
        // Sparse: no bytes are written, the length is over the limit.
        file.set_len(MAX_MIGRATION_FILE_BYTES + 1).expect("sized");
        let error = migrations_from_dir(&dir).unwrap_err().to_string();
        assert!(
            error.contains("1_big.sql") && error.contains("over the limit"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).expect("removed");
    }
}
