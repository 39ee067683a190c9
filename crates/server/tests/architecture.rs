//! The dependency rule of DESIGN.md, checked against `cargo metadata`.
//!
//! Dependencies point inward only: `server → http → app → ports → domain`
//! and `adapters-* → ports → domain` (storage and the title model alike).
//! Only `weft-server` (the composition root) names an adapter; `weft-app` and `weft-domain` never reach sqlx or poem,
//! not even transitively. Test-support crates (`weft-testkit`,
//! `weft-conformance`) are reachable only through dev-dependencies.

// Helpers outside #[test] fns are test code too: a panic is the failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

struct Graph {
    /// package name → names of its normal (non-dev, non-build) dependencies.
    normal: BTreeMap<String, BTreeSet<String>>,
    /// workspace package names.
    members: BTreeSet<String>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");

    let name_of: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let members = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|id| name_of[id.as_str().unwrap()].clone())
        .collect();
    let mut normal = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve graph") {
        let name = name_of[node["id"].as_str().unwrap()].clone();
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].clone())
            .collect();
        normal
            .entry(name)
            .or_insert_with(BTreeSet::new)
            .extend(deps);
    }
    Graph { normal, members }
}

impl Graph {
    fn direct_internal(&self, pkg: &str) -> BTreeSet<String> {
        self.normal[pkg]
            .iter()
            .filter(|d| self.members.contains(*d))
            .cloned()
            .collect()
    }

    fn closure(&self, pkg: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![pkg.to_owned()];
        while let Some(p) = stack.pop() {
            for d in self.normal.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Each crate may name only the internal crates the layering allows.
#[test]
fn internal_dependencies_point_inward_only() {
    let g = graph();
    let allowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("weft-domain", set(&[])),
        ("weft-ports", set(&["weft-domain"])),
        ("weft-app", set(&["weft-domain", "weft-ports"])),
        (
            "weft-adapters-postgres",
            set(&["weft-domain", "weft-ports", "weft-adapters-sqlx"]),
        ),
        (
            "weft-adapters-sqlite",
            set(&["weft-domain", "weft-ports", "weft-adapters-sqlx"]),
        ),
        ("weft-adapters-sqlx", set(&["weft-domain", "weft-ports"])),
        ("weft-adapters-titles", set(&["weft-domain", "weft-ports"])),
        ("weft-http", set(&["weft-domain", "weft-ports", "weft-app"])),
        (
            "weft-server",
            set(&[
                "weft-domain",
                "weft-ports",
                "weft-app",
                "weft-http",
                "weft-adapters-postgres",
                "weft-adapters-sqlite",
                "weft-adapters-sqlx",
                "weft-adapters-titles",
            ]),
        ),
        (
            "weft-conformance",
            set(&["weft-domain", "weft-ports", "weft-app", "weft-testkit"]),
        ),
        ("weft-testkit", set(&[])),
    ]);
    for member in &g.members {
        let allowed = allowed.get(member.as_str()).unwrap_or_else(|| {
            panic!("{member} is a new crate: add it to the dependency rule and ARCHITECTURE.md")
        });
        let actual = g.direct_internal(member);
        let outward: Vec<_> = actual.difference(allowed).collect();
        assert!(
            outward.is_empty(),
            "{member} depends outward on {outward:?}"
        );
    }
}

/// The core never reaches a database driver or the web framework, even
/// through another crate.
#[test]
fn the_core_reaches_neither_sqlx_nor_poem_nor_tokio_io() {
    let g = graph();
    for core in ["weft-domain", "weft-ports", "weft-app"] {
        let bad: Vec<_> = g
            .closure(core)
            .into_iter()
            .filter(|d| {
                d.starts_with("sqlx") || d.starts_with("poem") || d == "hyper" || d == "reqwest"
            })
            .collect();
        assert!(bad.is_empty(), "{core} reaches {bad:?}");
    }
    let inbound: Vec<_> = g
        .closure("weft-http")
        .into_iter()
        .filter(|d| d.starts_with("sqlx") || d.starts_with("weft-adapters"))
        .collect();
    assert!(
        inbound.is_empty(),
        "the HTTP adapter must not know the storage: it reaches {inbound:?}"
    );
    let model: Vec<_> = g
        .closure("weft-adapters-titles")
        .into_iter()
        .filter(|d| d.starts_with("sqlx") || d.starts_with("poem") || d == "weft-app")
        .collect();
    assert!(
        model.is_empty(),
        "the title model adapter must know neither storage nor the inbound HTTP side: it reaches {model:?}"
    );
    let domain = g.closure("weft-domain");
    assert!(
        !domain.contains("tokio") && !domain.contains("async-trait"),
        "weft-domain must stay synchronous and pure"
    );
}

/// Test-support crates never ship inside the service.
#[test]
fn test_support_crates_are_dev_dependencies_only() {
    let g = graph();
    for shipped in [
        "weft-server",
        "weft-http",
        "weft-app",
        "weft-adapters-postgres",
        "weft-adapters-sqlite",
        "weft-adapters-sqlx",
        "weft-adapters-titles",
    ] {
        let closure = g.closure(shipped);
        assert!(
            !closure.contains("weft-testkit") && !closure.contains("weft-conformance"),
            "{shipped} ships test support code"
        );
    }
}
