//! Our asymmetric tokens and JWKS against real Python clients: PyJWT's
//! `PyJWKClient` (EdDSA, ES256, RS256) and djangorestframework-simplejwt
//! 5.5.1 with `JWK_URL` (ES256, RS256). The clients come from
//! `tests/interop/requirements.txt`, installed once into a virtualenv under
//! `target/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use auth_service::config::JwtAlgorithm;

use crate::helpers::{Backend, TestApp};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The virtualenv's python, made on first use (pip needs the package index).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
        let python = venv.join("bin/python");
        let requirements = interop_dir().join("requirements.txt");
        let stamp = venv.join("requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            let made = Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .status()
                .expect("python3 -m venv");
            assert!(made.success(), "cannot create {}", venv.display());
            let installed = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements)
                .status()
                .expect("pip install");
            assert!(
                installed.success(),
                "pip install -r {}",
                requirements.display()
            );
            std::fs::write(&stamp, wanted).expect("the virtualenv's stamp");
        }
        python
    })
}

#[tokio::test]
async fn python_clients_verify_our_tokens_with_our_jwks() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    for (algorithm, alg) in [
        (JwtAlgorithm::EdDsa, "EdDSA"),
        (JwtAlgorithm::Es256, "ES256"),
        (JwtAlgorithm::Rs256, "RS256"),
    ] {
        let app = TestApp::spawn_with(&Backend::Sqlite, |s| {
            s.tokens.algorithm = algorithm;
            s.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let (user, pair) = app.signed_up("pyjwt").await;
        let url = format!(
            "http://{}/.well-known/jwks.json",
            app.http_addr.expect("the HTTP listener")
        );
        let output = tokio::process::Command::new(python)
            .arg(interop_dir().join("check_token.py"))
            .args([url.as_str(), alg, pair.access.as_str()])
            .arg(user.id.to_string())
            .output()
            .await
            .expect("python");
        assert!(
            output.status.success(),
            "{alg}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        app.stop().await;
    }
}
