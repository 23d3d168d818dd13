//! The CRM sync: Till mirrored into a Salesforce org.
//!
//! - [`domain`]: what each event changes in Salesforce (Accounts by business,
//!   Opportunities by payment and order, refunds as their updates), pure.
//! - [`consumer`]: queues those changes in the inbox transaction, once per event.
//! - [`worker`]: sends them through the Composite API, in order per record, parking what
//!   the org refuses; [`salesforce`]: the REST client through the outbound kit.
//! - [`store`]: the schema's SQL. [`service`]: the registration.

pub mod consumer;
pub mod domain;
pub mod salesforce;
pub mod service;
pub mod store;
pub mod worker;

pub static MIGRATIONS: till_db::SchemaMigrations = till_db::SchemaMigrations { schema: "crm", migrator: &MIGRATOR };
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How the CRM sync runs, provided by the composition root.
#[derive(Debug, Clone, Default)]
pub struct CrmConfig {
    /// `None`: changes are queued and wait for an org to be set.
    pub salesforce: Option<salesforce::SalesforceSettings>,
    pub worker: worker::WorkerConfig,
}
