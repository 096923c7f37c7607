//! Every password method against a real server: a throwaway PostgreSQL cluster
//! (initdb and pg_ctl as the `postgres` user, a free port, a temporary directory) whose
//! pg_hba.conf gives each of three roles its own method.

use effectful::postgres::{PgConfig, PgError, sqlstate};

use crate::cluster::Cluster;
use crate::harness::Client;

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
