//! The Python the interop tests drive: one virtualenv under `target/` with
//! `tests/interop/requirements.txt` (PyJWT, Django, simplejwt and the
//! database drivers), shared by every test that needs it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The virtualenv's python, made on first use (pip needs the package index).
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn python() -> &'static Path {
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
