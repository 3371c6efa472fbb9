//! TLS for both listeners (gRPC and HTTP): rustls, TLS 1.2 and 1.3 only,
//! with optional client certificates (mTLS), and a certificate that SIGHUP
//! replaces without dropping a connection.
//!
//! tonic's own `ServerTlsConfig` fixes the certificate at start-up, so the
//! handshake is ours: [`Tls::incoming`] accepts TCP connections, completes
//! each handshake on a task of its own (a slow or silent client holds up
//! nobody), and hands tonic the TLS streams, which it serves as it serves
//! TCP ones (the peer address still reaches `Request::remote_addr`). The
//! certificate is picked per handshake from an [`ArcSwap`]: [`Tls::reload`]
//! swaps it, so new handshakes get the new pair and open connections keep
//! theirs.
//!
//! Key material is never logged: errors name the file, not its content.

use std::{
    fmt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::{CryptoProvider, ring},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
        version::{TLS12, TLS13},
    },
    server::TlsStream,
};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;

use crate::config::{ClientAuth, TlsSettings};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes done but not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 64;

/// The protocols each listener offers in ALPN: gRPC clients (grpc-go,
/// hence grpcurl) insist on `h2`.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    Grpc,
    /// HTTP/2 and HTTP/1.1.
    Http,
}

/// The TLS configuration of a running server: cheap to clone, shared by
/// both listeners and the SIGHUP handler.
#[derive(Clone)]
pub struct Tls {
    certificate: Arc<CurrentCertificate>,
    grpc: TlsAcceptor,
    http: TlsAcceptor,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The TLS configuration `settings` ask for: `None` for plaintext (no
    /// TLS setting at all).
    ///
    /// # Errors
    /// Half a configuration (a certificate without its key, or the other
    /// way round, a client CA without a certificate), an unreadable or
    /// invalid file, a key that does not match the certificate.
    pub fn from_settings(settings: &TlsSettings) -> anyhow::Result<Option<Self>> {
        let (cert_file, key_file) = match (&settings.cert_file, &settings.key_file) {
            (None, None) => {
                if settings.client_ca_file.is_some() {
                    bail!(
                        "AUTH_TLS_CLIENT_CA_FILE is set without AUTH_TLS_CERT_FILE and AUTH_TLS_KEY_FILE"
                    );
                }
                return Ok(None);
            }
            (Some(_), None) => bail!("AUTH_TLS_CERT_FILE is set without AUTH_TLS_KEY_FILE"),
            (None, Some(_)) => bail!("AUTH_TLS_KEY_FILE is set without AUTH_TLS_CERT_FILE"),
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        };
        let provider = Arc::new(ring::default_provider());
        let certificate = Arc::new(CurrentCertificate(ArcSwap::from_pointee(
            load_certified_key(&cert_file, &key_file, &provider)?,
        )));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13, &TLS12])
            .context("TLS protocol versions")?;
        let builder =
            match &settings.client_ca_file {
                None => builder.with_no_client_auth(),
                Some(ca_file) => {
                    let mut roots = RootCertStore::empty();
                    for cert in read_certificates(ca_file, "AUTH_TLS_CLIENT_CA_FILE")? {
                        roots.add(cert).with_context(|| {
                            format!(
                                "AUTH_TLS_CLIENT_CA_FILE {}: invalid CA certificate",
                                ca_file.display()
                            )
                        })?;
                    }
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                    let verifier = match settings.client_auth {
                        ClientAuth::Required => verifier,
                        ClientAuth::Optional => verifier.allow_unauthenticated(),
                    };
                    builder.with_client_cert_verifier(verifier.build().with_context(|| {
                        format!("AUTH_TLS_CLIENT_CA_FILE {}", ca_file.display())
                    })?)
                }
            }
            .with_cert_resolver(certificate.clone());
        let acceptor = |alpn: &[&[u8]]| {
            let mut config = builder.clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        Ok(Some(Self {
            grpc: acceptor(&[b"h2"]),
            http: acceptor(&[b"h2", b"http/1.1"]),
            certificate,
            cert_file,
            key_file,
        }))
    }

    /// Reads the certificate and key files again; new handshakes use the
    /// new pair. On an error the current pair stays.
    ///
    /// # Errors
    /// An unreadable or invalid file, or a key that does not match the
    /// certificate.
    pub fn reload(&self) -> anyhow::Result<()> {
        let provider = ring::default_provider();
        let reloaded = load_certified_key(&self.cert_file, &self.key_file, &provider)?;
        self.certificate.0.store(Arc::new(reloaded));
        Ok(())
    }

    /// The acceptor for gRPC connections (ALPN `h2`), for a server that
    /// runs the handshakes itself (`super::connections`).
    pub(super) fn grpc_acceptor(&self) -> TlsAcceptor {
        self.grpc.clone()
    }

    /// The TLS connections over `tcp`, handshakes done: what tonic's
    /// server serves. A failed handshake (a plaintext client, an unknown
    /// client certificate) closes that connection and is logged at debug.
    pub fn incoming(&self, mut tcp: TcpIncoming, alpn: Alpn) -> TlsIncoming {
        let acceptor = match alpn {
            Alpn::Grpc => self.grpc.clone(),
            Alpn::Http => self.http.clone(),
        };
        let (accepted, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
        let accept_loop = tokio::spawn(async move {
            while let Some(connection) = tcp.next().await {
                let stream = match connection {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = accepted.send(tls).await;
                        }
                        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsIncoming {
            receiver,
            accept_loop,
        }
    }
}

/// What a server serves: the TCP connections as they come, or TLS over them.
#[derive(Debug)]
pub enum Incoming {
    Tcp(TcpIncoming),
    Tls(TlsIncoming),
}

impl Incoming {
    /// `tcp` itself without `tls`, else TLS over it.
    pub fn new(tcp: TcpIncoming, tls: Option<&Tls>, alpn: Alpn) -> Self {
        match tls {
            Some(tls) => Self::Tls(tls.incoming(tcp, alpn)),
            None => Self::Tcp(tcp),
        }
    }
}

/// The stream of [`Tls::incoming`]; dropping it (the server stopped)
/// closes the listener.
#[derive(Debug)]
pub struct TlsIncoming {
    receiver: mpsc::Receiver<TlsStream<TcpStream>>,
    accept_loop: JoinHandle<()>,
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// The certificate every new handshake is offered.
#[derive(Debug)]
struct CurrentCertificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The certificate chain and its key, checked to belong together.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(cert_file, "AUTH_TLS_CERT_FILE")?;
    let key = std::fs::read(key_file)
        .with_context(|| format!("AUTH_TLS_KEY_FILE {}: cannot read", key_file.display()))?;
    // The parser's error names no key bytes; ours names only the file.
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        anyhow::anyhow!(
            "AUTH_TLS_KEY_FILE {}: no PEM private key ({e})",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        anyhow::anyhow!(
            "AUTH_TLS_KEY_FILE {} does not fit AUTH_TLS_CERT_FILE {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// Every certificate of a PEM file; at least one.
fn read_certificates(file: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(file)
        .with_context(|| format!("{setting} {}: cannot read", file.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{setting} {}: invalid PEM ({e})", file.display()))?;
    if certificates.is_empty() {
        bail!("{setting} {}: no PEM certificate", file.display());
    }
    Ok(certificates)
}
