//! Every password method against a real server: a throwaway PostgreSQL cluster
//! (initdb and pg_ctl as the `postgres` user, a free port, a temporary directory) whose
//! pg_hba.conf gives each of three roles its own method.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use effectful::postgres::{PgConfig, PgError, sqlstate};

use crate::harness::Client;

const HOW: &str = "this test starts a throwaway cluster with the PostgreSQL server binaries (apt-get install postgresql-15) as the `postgres` user, through `runuser`, which needs root";

/// A cluster that stops and disappears when dropped.
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}\n{HOW}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{HOW}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    cmd
}

impl Cluster {
    fn start(hba: &str) -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap_or_else(|e| panic!("no /usr/lib/postgresql: {e}\n{HOW}"))
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .unwrap_or_else(|| panic!("no initdb under /usr/lib/postgresql/*/bin\n{HOW}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("effectful-pg-auth-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        let data = dir.join("data");
        run(as_postgres(&bin, "initdb").args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]));
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.display()
        );
        let mut existing =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).expect("write conf");
        let cluster = Cluster { dir, bin, port };
        run(as_postgres(&cluster.bin, "pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.join("log"))
            .arg("start"));
        cluster
    }

    /// Runs SQL as the superuser over the cluster's Unix socket.
    fn psql(&self, sql: &str) -> String {
        run(as_postgres(&self.bin, "psql")
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                sql,
            ]))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn login(port: u16, user: &str, password: &str) -> Result<Client, PgError> {
    Client::connect_to(
        port,
        PgConfig::new(user).database("postgres").password(password),
    )
}

#[test]
fn every_password_method_logs_in_and_a_wrong_password_is_refused_without_showing_it() {
    let cluster = Cluster::start(
        "local all postgres trust\n\
         host all clear_user 127.0.0.1/32 password\n\
         host all md5_user 127.0.0.1/32 md5\n\
         host all scram_user 127.0.0.1/32 scram-sha-256\n",
    );
    cluster.psql(
        "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
         CREATE ROLE clear_user LOGIN PASSWORD 'clear-secret';",
    );
    assert!(
        cluster
            .psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'")
            .starts_with("md5")
    );

    for (user, password) in [
        ("clear_user", "clear-secret"),
        ("md5_user", "md5-secret"),
        ("scram_user", "scram-secret"),
    ] {
        let mut client = login(cluster.port, user, password)
            .unwrap_or_else(|e| panic!("{user} could not log in: {e}"));
        let set = client.execute("SELECT current_user::text", &[]).unwrap();
        assert_eq!(set.rows[0].get::<String, _>(0).unwrap(), user);

        let wrong = "wrong-password-xyzzy";
        let err = login(cluster.port, user, wrong)
            .err()
            .expect("a wrong password is refused");
        assert_eq!(
            err.code(),
            Some(sqlstate::INVALID_PASSWORD),
            "{user}: {err}"
        );
        assert!(!err.to_string().contains(wrong), "{err}");
        assert!(!format!("{err:?}").contains(wrong), "{err:?}");
    }

    let err = match Client::connect_to(
        cluster.port,
        PgConfig::new("scram_user").database("postgres"),
    ) {
        Err(e) => e,
        Ok(_) => panic!("no password, yet logged in"),
    };
    assert!(err.to_string().contains("PgConfig has none"), "{err}");
}
