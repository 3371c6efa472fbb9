//! The Dockerfile and compose.yaml cannot be built here (no registry is
//! reachable), so they are checked by reading them against the binary: the
//! paths, user, ports and variables of the runtime image are the ones the
//! binary uses, and nothing in it needs a shell that distroless lacks.

use std::{collections::BTreeSet, path::Path};

use super::child::{auth_service, run, stdout};

fn project_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One Dockerfile instruction: keyword (upper case) and its arguments, with
/// continuation lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_owned(),
        });
        pending.clear();
    }
    out
}

/// The instructions of each stage, split at `FROM`.
fn stages(dockerfile: &str) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions(dockerfile) {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
    }
    stages
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

fn only<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found = args_of(stage, keyword);
    assert_eq!(found.len(), 1, "one {keyword} expected, found {found:?}");
    found[0]
}

/// `ENV A=1 B=2` → [("A", "1"), ("B", "2")]. Our values have no spaces.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("ENV in KEY=value form");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// A JSON-array (exec form) instruction's elements: no shell needed.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{args} is not exec form (a JSON array): {e}"))
}

/// Every variable `serve` reads, from its own --help.
fn variables_serve_reads() -> BTreeSet<String> {
    let output = run(&mut auth_service(&["serve", "--help"]));
    assert!(output.status.success(), "serve --help failed");
    let help = stdout(&output);
    let variables: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        variables.contains("AUTH_DATABASE_URL") && variables.len() > 20,
        "serve --help lists its variables: {variables:?}"
    );
    variables
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map(|(_, port)| port)
        .expect("host:port")
}

#[test]
fn the_runtime_image_runs_the_built_binary_as_nonroot_without_a_shell() {
    let stages = stages(&project_file("Dockerfile"));
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (builder, runtime) = (&stages[0], &stages[1]);

    // The builder: a toolchain at least as new as the workspace asks for.
    let builder_from = only(builder, "FROM");
    let (image, alias) = builder_from.split_once(" AS ").expect("FROM … AS builder");
    assert_eq!(alias.trim(), "builder");
    let toolchain = image
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .expect("a rust:<version> builder");
    let manifest = project_file("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("workspace rust-version");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(toolchain) >= version(wanted),
        "builder rust {toolchain} < rust-version {wanted}"
    );
    let workdir = only(builder, "WORKDIR");
    let build = args_of(builder, "RUN").join(" && ");
    assert!(
        build.contains("cargo build --release --locked --bin auth-service"),
        "{build}"
    );
    let built = format!("{workdir}/target/release/auth-service");

    // The runtime: distroless (no shell, no package manager), as nonroot.
    assert_eq!(
        only(runtime, "FROM"),
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    assert_eq!(only(runtime, "USER"), "nonroot:nonroot");
    for keyword in ["RUN", "HEALTHCHECK", "SHELL"] {
        assert!(
            args_of(runtime, keyword).is_empty(),
            "{keyword} needs a shell, which distroless has not"
        );
    }
    let copies = args_of(runtime, "COPY");
    let entrypoint = exec_form(only(runtime, "ENTRYPOINT"));
    assert!(
        copies.contains(&format!("--from=builder {built} {}", entrypoint[0]).as_str()),
        "the entrypoint {} is the binary the builder made ({built}): {copies:?}",
        entrypoint[0]
    );
    let command = exec_form(only(runtime, "CMD"));
    assert_eq!(command, ["serve"]);

    // The SQLite default lives in the working directory, which belongs to
    // the user the process runs as.
    let data_dir = only(runtime, "WORKDIR");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=builder --chown=nonroot:nonroot")
                && c.ends_with(&format!(" {data_dir}"))),
        "{data_dir} is copied in owned by nonroot: {copies:?}"
    );
    let env = env_pairs(only(runtime, "ENV"));
    let known = variables_serve_reads();
    for (key, _) in &env {
        assert!(known.contains(key), "ENV {key} is not read by serve");
    }
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("ENV {key}"))
    };
    let database = value("AUTH_DATABASE_URL");
    assert!(
        database.starts_with(&format!("sqlite://{data_dir}/")),
        "{database} outside {data_dir}"
    );
    let exposed: Vec<&str> = only(runtime, "EXPOSE").split_whitespace().collect();
    assert!(exposed.contains(&port_of(value("AUTH_LISTEN_ADDR"))));
    assert!(exposed.contains(&"8080"), "the HTTP listener's port");

    // Neither build output nor keys go into the build context.
    let ignored = project_file(".dockerignore");
    for pattern in ["target/", "*.pem", "*.jwt-secret"] {
        assert!(
            ignored.lines().any(|l| l == pattern),
            ".dockerignore: {pattern}"
        );
    }
}

#[test]
fn the_compose_example_uses_only_variables_the_binary_reads() {
    let compose = project_file("compose.yaml");
    let known = variables_serve_reads();
    let settings: Vec<(&str, &str)> = compose
        .lines()
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(key, _)| key.starts_with("AUTH_"))
        .collect();
    assert!(settings.len() >= 4, "{settings:?}");
    for (key, _) in &settings {
        assert!(
            known.contains(*key),
            "compose.yaml sets {key}, which serve does not read"
        );
    }
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("compose.yaml sets {key}"))
    };
    assert!(value("AUTH_DATABASE_URL").starts_with("postgres://"));
    // The key is the secret compose mounts, and both replicas publish ports
    // that lead to the container's gRPC and HTTP listeners.
    assert_eq!(
        value("AUTH_JWT_PRIVATE_KEY_FILE"),
        "/run/secrets/signing_key"
    );
    assert!(compose.contains("\n  signing_key:\n"));
    let http_port = port_of(value("AUTH_HTTP_ADDR"));
    for replica in ["auth-1", "auth-2"] {
        let section = compose
            .split(&format!("\n  {replica}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("service {replica}"));
        let section = section.split("\n\n").next().unwrap_or_default();
        assert!(section.contains("<<: *auth-service"), "{replica}");
        assert!(section.contains(":50051\""), "{replica} publishes gRPC");
        assert!(
            section.contains(&format!(":{http_port}\"")),
            "{replica} publishes HTTP"
        );
    }
}
