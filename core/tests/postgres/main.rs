//! `effectful::postgres` tested two ways: against a scripted in-memory server that
//! checks every byte (`scripted`, `splits`), and against the real PostgreSQL 15 on
//! 127.0.0.1:5432 through a small blocking `std::net` driver (`harness`, `server`), and
//! throwaway clusters for each password method (`auth_clusters`); the pool's examples
//! and properties are in `pool`.

mod auth_clusters;
mod cluster;
mod database;
mod harness;
mod pool;
mod scripted;
mod server;
mod splits;
