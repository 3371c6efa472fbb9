//! TLS and mTLS on the gRPC listener: certificates generated here (rcgen),
//! called with the generated tonic client over TLS.

use std::{path::PathBuf, time::Duration};

use auth_service::{config::ClientAuth, pb::auth_service_client::AuthServiceClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{
    child::{ChildServer, auth_service, run, stderr},
    helpers::{Backend, TestApp, register_request},
};

/// A CA and what it signs, written as PEM files in a directory of the test's own.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Pair {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca_pem: cert.pem(),
            ca: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` (server or client) signed by this CA.
    fn issue(&self) -> Pair {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

/// A TLS channel to `app` trusting `ca`, presenting `identity` if any.
async fn connect(
    app: &TestApp,
    ca: &str,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Endpoint::from_shared(format!("https://localhost:{}", app.addr.port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Registers a user over `channel`: a whole call, through the handshake.
async fn call(channel: Channel, username: &str) -> Result<(), tonic::Status> {
    AuthServiceClient::new(channel)
        .register(register_request(username))
        .await
        .map(drop)
}

/// A server with the certificate of `pki`, and with mTLS when `client` is set.
async fn spawn(pki: &Pki, client: Option<(&Pki, ClientAuth)>) -> TestApp {
    spawn_with(pki, client, |_| {}).await
}

async fn spawn_with(
    pki: &Pki,
    client: Option<(&Pki, ClientAuth)>,
    configure: impl FnOnce(&mut auth_service::config::Settings),
) -> TestApp {
    let server = pki.issue();
    let cert = pki.write("server.pem", &format!("{}{}", server.cert, pki.ca_pem));
    let key = pki.write("server.key", &server.key);
    let client_ca = client.map(|(ca, auth)| (pki.write("client-ca.pem", &ca.ca_pem), auth));
    TestApp::spawn_with(&Backend::Sqlite, move |settings| {
        settings.tls.cert_file = Some(cert);
        settings.tls.key_file = Some(key);
        if let Some((ca, auth)) = client_ca {
            settings.tls.client_ca_file = Some(ca);
            settings.tls.client_auth = auth;
        }
        configure(settings);
    })
    .await
}

#[tokio::test]
async fn the_tonic_client_calls_over_tls_and_plaintext_is_refused() {
    let pki = Pki::new("test server CA");
    let app = spawn(&pki, None).await;

    let channel = connect(&app, &pki.ca_pem, None).await.expect("TLS connect");
    call(channel, "alice").await.expect("a call over TLS");

    // The test app's own client speaks plaintext HTTP/2: refused.
    let refused = app.auth.clone().register(register_request("bob")).await;
    assert!(refused.is_err(), "plaintext answered: {refused:?}");

    // A client that does not trust the server's CA refuses it.
    let stranger = Pki::new("another CA");
    let result = match connect(&app, &stranger.ca_pem, None).await {
        Ok(channel) => call(channel, "carol").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(result.is_err(), "an untrusted server was accepted");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let app = spawn(&pki, Some((&clients, ClientAuth::Required))).await;

    // Without a certificate.
    let without = match connect(&app, &pki.ca_pem, None).await {
        Ok(channel) => call(channel, "alice").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(without.is_err(), "no client certificate was accepted");

    // With one from another CA.
    let wrong = Pki::new("wrong CA").issue();
    let with_wrong = match connect(&app, &pki.ca_pem, Some(&wrong)).await {
        Ok(channel) => call(channel, "bob").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        with_wrong.is_err(),
        "a foreign client certificate was accepted"
    );

    // With the right one.
    let right = clients.issue();
    let channel = connect(&app, &pki.ca_pem, Some(&right)).await.unwrap();
    call(channel, "carol")
        .await
        .expect("a call with the right certificate");
}

#[tokio::test]
async fn optional_mtls_accepts_clients_without_a_certificate_but_checks_one_given() {
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let app = spawn(&pki, Some((&clients, ClientAuth::Optional))).await;

    let channel = connect(&app, &pki.ca_pem, None).await.unwrap();
    call(channel, "alice")
        .await
        .expect("no certificate, optional");

    let right = clients.issue();
    let channel = connect(&app, &pki.ca_pem, Some(&right)).await.unwrap();
    call(channel, "bob").await.expect("the right certificate");

    let wrong = Pki::new("wrong CA").issue();
    let with_wrong = match connect(&app, &pki.ca_pem, Some(&wrong)).await {
        Ok(channel) => call(channel, "carol").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        with_wrong.is_err(),
        "a foreign client certificate was accepted"
    );
}

#[test]
fn half_configured_tls_is_one_line_and_a_failure() {
    let pki = Pki::new("CA");
    let pair = pki.issue();
    let cert = pki.write("cert.pem", &pair.cert);
    let other_key = pki.write("other.key", &pki.issue().key);
    let missing = pki.dir.path().join("missing.pem");
    let database = format!(
        "sqlite://{}?mode=rwc",
        pki.dir.path().join("a.db").display()
    );
    let cert = cert.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("AUTH_TLS_CERT_FILE", cert)], "without AUTH_TLS_KEY_FILE"),
        (
            &[
                ("AUTH_TLS_CERT_FILE", missing.to_str().unwrap()),
                ("AUTH_TLS_KEY_FILE", other_key.to_str().unwrap()),
            ],
            "cannot read",
        ),
        (
            &[
                ("AUTH_TLS_CERT_FILE", cert),
                ("AUTH_TLS_KEY_FILE", other_key.to_str().unwrap()),
            ],
            "does not fit",
        ),
    ];
    for (env, expected) in cases {
        let output = run(auth_service(&["serve"])
            .env("AUTH_DATABASE_URL", &database)
            .env("AUTH_LISTEN_ADDR", "127.0.0.1:0")
            .env("AUTH_JWT_SECRET", "x".repeat(40))
            .env("RUST_LOG", "off")
            .envs(env.iter().copied()));
        assert_eq!(output.status.code(), Some(1), "{env:?}");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
        assert!(err.contains(expected), "{env:?}: {err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}

/// A TLS client config trusting `ca` for `localhost`.
fn trusting(ca: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let old = Pki::new("old CA");
    let new = Pki::new("new CA");
    let first = old.issue();
    let cert = old.write("server.pem", &first.cert);
    let key = old.write("server.key", &first.key);
    let database = format!(
        "sqlite://{}?mode=rwc",
        old.dir.path().join("a.db").display()
    );
    let server = ChildServer::on(&database)
        .envs(&[
            ("AUTH_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("AUTH_TLS_KEY_FILE", key.to_str().unwrap()),
        ])
        .log("error")
        .with_tls(trusting(&old.ca_pem))
        .start()
        .await;
    let endpoint = |ca: &str| {
        Endpoint::from_shared(format!("https://localhost:{}", server.channel_port()))
            .unwrap()
            .tls_config(trusting(ca))
            .unwrap()
            .connect_timeout(Duration::from_secs(10))
    };
    // Open before the reload, and kept.
    let before = endpoint(&old.ca_pem).connect().await.unwrap();
    call(before.clone(), "alice").await.unwrap();

    let second = new.issue();
    std::fs::write(&cert, &second.cert).unwrap();
    std::fs::write(&key, &second.key).unwrap();
    server.signal("HUP");
    let started = std::time::Instant::now();
    let after = loop {
        if let Ok(channel) = endpoint(&new.ca_pem).connect().await
            && call(channel.clone(), "bob").await.is_ok()
        {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The connection opened before goes on; a new one gets the new certificate.
    call(before, "carol")
        .await
        .expect("the old connection was dropped");
    let old_trust = match endpoint(&old.ca_pem).connect().await {
        Ok(channel) => call(channel, "dave").await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        old_trust.is_err(),
        "a new connection got the old certificate"
    );

    // A bad file keeps the current pair, with one error line.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let channel = endpoint(&new.ca_pem).connect().await.unwrap();
    call(channel, "erin")
        .await
        .expect("the current pair was kept");
    call(after, "frank").await.unwrap();

    let output = server.terminate(Duration::from_secs(30)).await;
    let log = stderr(&output);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("TLS")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("keeping the current one"), "{log}");
    assert!(!log.contains("not a key"), "{log}");
}

/// `GET path` over HTTP/1.1 on a TLS connection to `addr` trusting `ca`:
/// the whole response, or the error that ended it.
async fn https_get(addr: std::net::SocketAddr, ca: &str, path: &str) -> std::io::Result<String> {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{
        TlsConnector,
        rustls::{ClientConfig, RootCertStore, crypto::ring},
    };

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let mut config =
        ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn the_http_listener_serves_the_same_certificate() {
    let pki = Pki::new("server CA");
    let app = spawn_with(&pki, None, |settings| {
        settings.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = app.http_addr.unwrap();
    let response = https_get(http, &pki.ca_pem, auth_service::web::JWKS_PATH)
        .await
        .expect("HTTPS GET");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(http).await?;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        std::io::Result::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), plain)
        .await
        .expect("the plaintext connection was not closed")
        .unwrap();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
