//! Which database Till uses: the one DATABASE_URL names, or the embedded cluster in the
//! data directory (started here, or already running under another `till up`).

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use till_db::embedded::{Cluster, ClusterOptions};

use crate::cli::DatabaseArgs;

pub const DATABASE_NAME: &str = "till";
const PORT_FILE: &str = "postgres.port";
const EMBEDDED_CONNECTIONS_MAX: u32 = 100;

pub struct Database {
    /// Connection options of the login role that owns the tables.
    pub owner_options: PgConnectOptions,
    /// The cluster we started, to stop on the way out; `None` for DATABASE_URL or a
    /// cluster another process runs.
    pub cluster: Option<Cluster>,
    pub description: String,
}

impl Database {
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(cluster) = self.cluster {
            cluster.stop().await.context("stopping the embedded PostgreSQL")?;
        }
        Ok(())
    }
}

/// Opens the database for `till up`: DATABASE_URL, or the embedded cluster, started here.
pub async fn open_for_up(args: &DatabaseArgs) -> anyhow::Result<Database> {
    if let Some(url) = &args.database_url {
        return external(url);
    }
    start_embedded(args).await
}

/// Opens the database for a one-off command: DATABASE_URL, the cluster a running
/// `till up` serves, or the cluster started just for this command.
pub async fn open_for_command(args: &DatabaseArgs) -> anyhow::Result<Database> {
    if let Some(url) = &args.database_url {
        return external(url);
    }
    if let Some(running) = running_embedded(&args.data_dir).await {
        return Ok(running);
    }
    start_embedded(args).await
}

fn external(url: &str) -> anyhow::Result<Database> {
    let owner_options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let description = format!("PostgreSQL at {}:{} (DATABASE_URL)", owner_options.get_host(), owner_options.get_port());
    Ok(Database { owner_options, cluster: None, description })
}

async fn running_embedded(data_dir: &Path) -> Option<Database> {
    let port: u16 = std::fs::read_to_string(data_dir.join(PORT_FILE)).ok()?.trim().parse().ok()?;
    let password = std::fs::read_to_string(data_dir.join("postgres.password")).ok()?;
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(till_db::embedded::SUPERUSER)
        .password(password.trim())
        .database(DATABASE_NAME);
    let connection = sqlx::PgConnection::connect_with(&options).await.ok()?;
    let _ = connection.close().await;
    let description = format!("embedded PostgreSQL on 127.0.0.1:{port} (run by another till up)");
    Some(Database { owner_options: options, cluster: None, description })
}

async fn start_embedded(args: &DatabaseArgs) -> anyhow::Result<Database> {
    let previous_port =
        std::fs::read_to_string(args.data_dir.join(PORT_FILE)).ok().and_then(|text| text.trim().parse::<u16>().ok());
    let options = ClusterOptions {
        data_dir: args.data_dir.clone(),
        port: args.pg_port,
        preferred_port: previous_port,
        durable: true,
        ephemeral: false,
        connections_max: EMBEDDED_CONNECTIONS_MAX,
        settings: Vec::new(),
    };
    let cluster = Cluster::start(&options).await?;
    cluster.ensure_database(DATABASE_NAME).await?;
    std::fs::write(args.data_dir.join(PORT_FILE), cluster.port().to_string())
        .context("recording the PostgreSQL port")?;
    let description =
        format!("embedded PostgreSQL on 127.0.0.1:{} (cluster in {})", cluster.port(), cluster.cluster_dir().display());
    let owner_options = cluster.connect_options(DATABASE_NAME);
    Ok(Database { owner_options, cluster: Some(cluster), description })
}
