#![allow(dead_code)] // each including test crate uses its own part of it
//! A throwaway PostgreSQL cluster for tests that stop, restart or reconfigure a
//! server: initdb and pg_ctl as the `postgres` user (through `runuser`), a free port,
//! a temporary directory, all gone when dropped. Shared by `effectful`'s and
//! `effectful-tokio`'s tests (the latter include it by path).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const HOW: &str = "this test starts a throwaway cluster with the PostgreSQL server binaries (apt-get install postgresql-15) as the `postgres` user, through `runuser`, which needs root";

/// A cluster that stops and disappears when dropped.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

pub fn run(cmd: &mut Command) -> String {
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
    /// A new cluster with `hba` as its pg_hba.conf, started.
    pub fn start(hba: &str) -> Cluster {
        Cluster::start_with(hba, "", &[])
    }

    /// A new cluster with `hba` as its pg_hba.conf, `conf` appended to its
    /// postgresql.conf (later lines win), and each `(name, source)` of `files` copied
    /// into its data directory as `name` (owned by `postgres`, mode 600, as a
    /// private key must be; `conf` names them relative to the data directory), started.
    pub fn start_with(hba: &str, conf: &str, files: &[(&str, &Path)]) -> Cluster {
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
        let dir = std::env::temp_dir().join(format!(
            "effectful-pg-cluster-{}-{port}",
            std::process::id()
        ));
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
        for (name, source) in files {
            let target = data.join(name);
            std::fs::copy(source, &target)
                .unwrap_or_else(|e| panic!("copy {} into the cluster: {e}", source.display()));
            run(Command::new("chown").arg("postgres:postgres").arg(&target));
            run(Command::new("chmod").arg("600").arg(&target));
        }
        let ours = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}\n",
            dir.display()
        );
        let mut existing =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
        existing.push_str(&ours);
        std::fs::write(data.join("postgresql.conf"), existing).expect("write conf");
        let cluster = Cluster { dir, bin, port };
        cluster.start_again();
        cluster
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        run(as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("start"));
    }

    /// Stops the cluster at once (`-m immediate`: sessions are cut, as in a crash).
    pub fn stop(&self) {
        run(as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]));
    }

    /// Runs SQL as the superuser over the cluster's Unix socket.
    pub fn psql(&self, sql: &str) -> String {
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
