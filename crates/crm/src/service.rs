//! The CRM sync's registration: its schema, the consumer (run by the events service's
//! `Subscriber`) and the worker. It has no routes: `till crm status` and `till crm replay`
//! are its operators' doors.

use std::sync::Arc;

use till_http::service::{Context, Job, MountError, Mounted, Service};

pub static SERVICE: Service = Service { name: "crm", migrations: &crate::MIGRATIONS, outbox: None, permissions, mount };

fn mount(context: &mut Context) -> Result<Mounted, MountError> {
    let config: crate::CrmConfig = context.require("crm")?;
    let subscriber: till_outbox::consume::Subscriber = context.require("crm")?;
    let salesforce = match &config.salesforce {
        Some(settings) => Some(
            crate::salesforce::Salesforce::new(settings.clone())
                .map_err(|why| MountError::Failed { service: "crm", why })?,
        ),
        None => None,
    };
    let (pool, worker) = (context.pool.clone(), config.worker.clone());
    Ok(Mounted {
        jobs: vec![
            Job::new("crm consumer", move |shutdown| {
                subscriber.subscribe(crate::consumer::subscription(), Arc::new(crate::consumer::Mirror), shutdown)
            }),
            Job::new("crm worker", move |shutdown| crate::worker::run(pool, salesforce, worker, shutdown)),
        ],
        ..Mounted::default()
    })
}

fn permissions() -> Vec<till_http::auth::RoutePermission> {
    Vec::new()
}
