//! A TLS listener for providers whose official SDKs only speak `https://` to the root of
//! a host (simple-salesforce builds `https://{instance}/services/data/…` from the host
//! alone). The certificate is self-signed for `127.0.0.1` and `localhost`, made at start
//! (rcgen) and written as PEM where the caller asks, so a client can trust it
//! (`REQUESTS_CA_BUNDLE=…`). Connections are served by hyper over tokio-rustls.

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

/// A self-signed certificate and the server configuration that presents it.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate, PEM, for clients to trust.
    pub certificate_pem: String,
}

pub fn self_signed() -> Result<Identity, String> {
    let names = vec![String::from("127.0.0.1"), String::from("localhost")];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|error| format!("a certificate: {error}"))?;
    let certificate_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS versions: {error}"))?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|error| format!("the TLS configuration: {error}"))?;
    Ok(Identity { config: Arc::new(config), certificate_pem })
}

/// Serves `router` over TLS on `listener` until dropped, a task per connection.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "a TLS connection to the simulator ended with an error");
            }
        });
    }
}
