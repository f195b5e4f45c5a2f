//! One HTTP client for everything this program fetches: the ACME CA, the DNS providers' APIs and
//! the port-80 self-test. hyper + rustls with ring, the stack instant-acme already brings, so no
//! second TLS library lands in the binary.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// A CA or API that has not answered in this time is treated as down; the timer tries again later.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Provider and probe answers we read are small; a larger one is not what we asked for.
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Http {
    inner: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

/// A response with its body read.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }
}

impl Http {
    /// Trusts the system's CA store, or only the certificates in `ca_bundle` when given (a private
    /// or test CA such as Pebble).
    pub fn new(ca_bundle: Option<&Path>) -> Result<Http, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_bundle {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
                for cert in certs {
                    let cert =
                        cert.map_err(|e| format!("CA bundle {} is not PEM: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("CA bundle {} holds no certificate", path.display()));
                }
                builder.with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Http {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request and reads the whole (bounded) body.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder().method(method).uri(url).header(
            "user-agent",
            concat!("hearth-acme/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map(BodyWrapper::from).unwrap_or_default())
            .map_err(|e| format!("bad request to {url}: {e}"))?;
        let fetch = async {
            let rsp = self
                .inner
                .request(req)
                .await
                .map_err(|e| describe(url, &e))?;
            let status = rsp.status();
            let body = http_body_util::Limited::new(rsp.into_body(), MAX_BODY);
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map_err(|e| format!("reading the answer from {url}: {e}"))?;
            Ok(Reply {
                status,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url} did not answer within {}s", REQUEST_TIMEOUT.as_secs()))?
    }
}

/// The innermost cause of a client error, which is where the useful words are ("Connection refused").
fn describe(url: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("cannot reach {url}: {cause}")
}

/// Lets instant-acme use our client (and its timeouts and trust roots) for the CA.
impl HttpClient for Http {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let fut = self.inner.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(describe(&url, &e).into())),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("{url} did not answer within {}s", REQUEST_TIMEOUT.as_secs()).into(),
                )),
            }
        })
    }
}
