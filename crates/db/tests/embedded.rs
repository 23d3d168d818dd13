//! The embedded cluster's lifecycle against the real PostgreSQL binaries: first start,
//! reuse, clean stop, password-only loopback access, and (as root) an unprivileged server.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use till_db::embedded::{Cluster, ClusterOptions};

fn options(data_dir: std::path::PathBuf) -> ClusterOptions {
    ClusterOptions {
        data_dir,
        port: None,
        preferred_port: None,
        durable: false,
        ephemeral: false,
        connections_max: 20,
        settings: Vec::new(),
    }
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("till-cluster-test-{}", uuid::Uuid::now_v7().simple()))
}

#[tokio::test]
async fn start_reuse_and_clean_stop() {
    let data_dir = temp_dir();
    let cluster = Cluster::start(&options(data_dir.clone())).await.expect("first start");
    let pg_dir = cluster.cluster_dir().to_path_buf();
    cluster.ensure_database("lifecycle").await.expect("database");
    let mut connection =
        sqlx::PgConnection::connect_with(&cluster.connect_options("lifecycle")).await.expect("connect");
    sqlx::query("CREATE TABLE kept (value text)").execute(&mut connection).await.expect("create");
    sqlx::query("INSERT INTO kept VALUES ('across restarts')").execute(&mut connection).await.expect("insert");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut connection).await.expect("show");
    assert_eq!(listen, "127.0.0.1");
    let hba: Vec<String> = sqlx::query_scalar("SELECT auth_method FROM pg_hba_file_rules")
        .fetch_all(&mut connection)
        .await
        .expect("hba rules");
    assert!(!hba.is_empty() && hba.iter().all(|method| method == "scram-sha-256"), "no trust rules: {hba:?}");
    connection.close().await.expect("close");

    let password_file = data_dir.join("postgres.password");
    let mode = std::fs::metadata(&password_file).expect("password file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&password_file).expect("password");
    if nix::unistd::geteuid().is_root() {
        let owner = std::fs::metadata(&pg_dir).expect("cluster dir").uid();
        assert_ne!(owner, 0, "as root, the cluster belongs to an unprivileged user");
    }

    // Without the password, or with a wrong one, TCP logins fail.
    let no_password =
        PgConnectOptions::new().host("127.0.0.1").port(cluster.port()).username("till").database("lifecycle");
    assert!(sqlx::PgConnection::connect_with(&no_password).await.is_err());
    assert!(sqlx::PgConnection::connect_with(&no_password.clone().password("wrong")).await.is_err());

    let port = cluster.port();
    cluster.stop().await.expect("stop");
    assert!(!pg_dir.join("postmaster.pid").exists(), "a clean stop removes the lock file");
    let log = std::fs::read_to_string(data_dir.join("postgres.log")).expect("log");
    assert!(log.contains("database system is shut down"));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the port is free again");

    let again = Cluster::start(&options(data_dir.clone())).await.expect("second start");
    assert_eq!(again.cluster_dir(), pg_dir.as_path(), "the same cluster is reused");
    assert_eq!(std::fs::read_to_string(&password_file).expect("password"), password, "and its password");
    let mut connection = sqlx::PgConnection::connect_with(&again.connect_options("lifecycle")).await.expect("connect");
    let kept: String = sqlx::query_scalar("SELECT value FROM kept").fetch_one(&mut connection).await.expect("select");
    assert_eq!(kept, "across restarts");
    connection.close().await.expect("close");
    again.stop().await.expect("stop");
    std::fs::remove_dir_all(&data_dir).expect("cleanup");
    if pg_dir.exists() {
        std::fs::remove_dir_all(&pg_dir).expect("cleanup");
    }
}

#[tokio::test]
async fn an_ephemeral_cluster_deletes_itself_on_stop() {
    let data_dir = temp_dir();
    let mut options = options(data_dir.clone());
    options.ephemeral = true;
    let cluster = Cluster::start(&options).await.expect("start");
    let pg_dir = cluster.cluster_dir().to_path_buf();
    cluster.stop().await.expect("stop");
    assert!(!data_dir.exists() && !pg_dir.exists());
}
