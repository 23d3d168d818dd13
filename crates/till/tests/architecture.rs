//! Dependency rules from ARCHITECTURE.md that the compiler cannot enforce: the kit and
//! every service's domain module stay free of I/O crates.

use std::path::{Path, PathBuf};

const IO_CRATES: [&str; 6] = ["axum", "sqlx", "reqwest", "tokio", "lapin", "hyper"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn uses_io_crate(source: &str) -> Option<&'static str> {
    IO_CRATES.into_iter().find(|name| {
        source.lines().any(|line| {
            let line = line.trim();
            !line.starts_with("//") && (line.contains(&format!("{name}::")) || line.contains(&format!("use {name}")))
        })
    })
}

/// Every `.rs` file under `dir`, however deep.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("sources") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The kit and the pricing engine are pure: no I/O crate in their manifests or sources.
#[test]
fn the_kit_and_the_pricing_engine_have_no_io_dependencies() {
    for name in ["kit", "pricing"] {
        let crate_dir = workspace().join("crates").join(name);
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
        for io in IO_CRATES {
            assert!(!manifest.lines().any(|line| line.trim_start().starts_with(io)), "crates/{name} depends on {io}");
        }
        let files = sources(&crate_dir.join("src"));
        assert!(files.len() >= 3, "found crates/{name}'s sources");
        for path in files {
            let source = std::fs::read_to_string(&path).expect("source");
            assert_eq!(uses_io_crate(&source), None, "{} uses an I/O crate", path.display());
        }
    }
}

#[test]
fn service_domains_have_no_io_dependencies() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let crate_dir = entry.expect("entry").path();
        for candidate in [crate_dir.join("src/domain.rs"), crate_dir.join("src/domain")] {
            let files: Vec<PathBuf> = if candidate.is_dir() {
                std::fs::read_dir(&candidate).expect("domain dir").map(|e| e.expect("entry").path()).collect()
            } else if candidate.is_file() {
                vec![candidate]
            } else {
                continue;
            };
            for file in files {
                let source = std::fs::read_to_string(&file).expect("source");
                assert_eq!(uses_io_crate(&source), None, "{} uses an I/O crate", file.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "found the domain modules");
}

#[test]
fn the_detector_sees_a_violation() {
    assert_eq!(uses_io_crate("use sqlx::PgPool;"), Some("sqlx"));
    assert_eq!(uses_io_crate("fn f() { axum::Json(1) }"), Some("axum"));
    assert_eq!(uses_io_crate("// sqlx:: in a comment\nuse serde::Serialize;"), None);
}

/// Only the outbound kit calls outside parties. The webhooks (addresses tenants chose,
/// through the SSRF guard), the test harness and the benchmarks (their load) are the
/// other crates that may hold an HTTP client; the binary's end-to-end tests hold one as a
/// dev-dependency only.
#[test]
fn only_the_outbound_kit_and_the_webhooks_make_http_requests() {
    // The simulator plays outside parties, and those call Till (a gateway's webhooks).
    const MAY_HOLD_AN_HTTP_CLIENT: [&str; 5] = ["outbound", "webhooks", "testkit", "bench", "sim"];
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let crate_dir = entry.expect("entry").path();
        let name = crate_dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let Ok(manifest) = std::fs::read_to_string(crate_dir.join("Cargo.toml")) else { continue };
        let dependencies = manifest.split("[dev-dependencies]").next().unwrap_or_default();
        let has_client = dependencies.lines().any(|line| {
            let line = line.trim_start();
            line.starts_with("reqwest") || line.starts_with("hyper-util") && line.contains("client")
        });
        assert!(
            !has_client || MAY_HOLD_AN_HTTP_CLIENT.contains(&name.as_str()),
            "crates/{name} depends on an HTTP client"
        );
    }
}

/// The crate's normal dependencies, by name, as its manifest lists them.
fn dependencies(crate_dir: &Path) -> Vec<String> {
    let Ok(manifest) = std::fs::read_to_string(crate_dir.join("Cargo.toml")) else { return Vec::new() };
    let Some((_, rest)) = manifest.split_once("[dependencies]") else { return Vec::new() };
    let section = rest.split("\n[").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|line| line.split(['=', '.', ' ']).next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Services publish through the outbox kit and nothing else of the events backbone: only
/// the composition root, the binary, the test harness and the benchmarks link the events
/// service. The
/// kit itself holds neither a broker client nor an HTTP client.
#[test]
fn services_reach_the_events_backbone_only_through_the_outbox_kit() {
    const MAY_LINK_THE_EVENTS_SERVICE: [&str; 5] = ["events", "server", "testkit", "till", "bench"];
    let mut services = 0;
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let crate_dir = entry.expect("entry").path();
        let name = crate_dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let dependencies = dependencies(&crate_dir);
        if dependencies.iter().any(|dependency| dependency == "till-outbox") {
            services += 1;
        }
        assert!(
            !dependencies.iter().any(|dependency| dependency == "till-events")
                || MAY_LINK_THE_EVENTS_SERVICE.contains(&name.as_str()),
            "crates/{name} depends on the events service; services depend only on the outbox kit"
        );
    }
    assert!(services >= 3, "found the services that publish events");
    let outbox = dependencies(&workspace().join("crates/outbox"));
    assert!(!outbox.is_empty(), "read the outbox kit's manifest");
    for forbidden in ["lapin", "reqwest", "hyper-util", "till-events"] {
        assert!(!outbox.iter().any(|dependency| dependency == forbidden), "the outbox kit depends on {forbidden}");
    }
}

/// The benchmarks are not part of the product: nothing depends on them, and the binary
/// only runs theirs (`till bench` execs `till-bench`).
#[test]
fn nothing_depends_on_the_benchmarks() {
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let crate_dir = entry.expect("entry").path();
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap_or_default();
        let name = crate_dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        assert!(
            name == "bench" || !manifest.lines().any(|line| line.trim_start().starts_with("till-bench")),
            "crates/{name} depends on the benchmarks"
        );
    }
}

/// The simulator plays the outside world; no service links it (a service that did could
/// call it in process and skip the adapter it is there to exercise). Only the binary
/// (to serve it: `till sim`, `till up`) and the test harness (a simulator per test app) do.
#[test]
fn only_the_binary_links_the_simulator() {
    let mut linked = Vec::new();
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let crate_dir = entry.expect("entry").path();
        let name = crate_dir.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        if dependencies(&crate_dir).iter().any(|dependency| dependency == "till-sim") {
            linked.push(name);
        }
    }
    linked.sort();
    assert_eq!(linked, ["testkit", "till"], "crates linking the simulator");
}

/// Commerce takes its payments through payments' API, called in process
/// (`till_http::internal`), never by linking the payments service: the checkout's
/// steps are the routes a client would call, with their idempotency and recovery.
#[test]
fn commerce_reaches_payments_only_through_its_api() {
    let commerce = dependencies(&workspace().join("crates/commerce"));
    assert!(commerce.iter().any(|dependency| dependency == "till-http"), "read commerce's manifest");
    for service in ["till-payments", "till-payouts", "till-ledger"] {
        assert!(!commerce.iter().any(|dependency| dependency == service), "commerce links {service}");
    }
}
