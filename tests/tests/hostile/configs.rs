//! Config files as an admin might botch them: mutations of the shipped
//! examples never panic a parser; an error names the file; a file that
//! parses and validates really is within the documented ranges.

use std::path::{Path, PathBuf};

use crate::values::{Gen, run};

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/etc/rpool")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replacement values for a TOML value: wrong types, edges, hostile text.
fn hostile_value(g: &mut Gen) -> String {
    match g.rng.u8(..8) {
        0 => g
            .pick(&[
                "0",
                "-1",
                "1",
                "-9223372036854775808",
                "9223372036854775807",
                "18446744073709551616",
            ])
            .to_string(),
        1 => g
            .pick(&["nan", "inf", "-inf", "0.5", "1e308", "-0.0"])
            .to_string(),
        2 => g
            .pick(&[
                "true",
                "false",
                "[]",
                "{}",
                "[1, 2]",
                "{ a = 1 }",
                "1979-05-27T07:32:00Z",
            ])
            .to_string(),
        3 => format!("{:?}", g.string()),
        4 => format!("'{}'", g.string().replace(['\'', '\n', '\r'], "")),
        5 => format!("[{:?}, {:?}]", g.string(), g.string()),
        6 => g.u64().to_string(),
        _ => format!(
            "\"{}\"",
            g.pick(&[
                "",
                "0.0.0.0:0",
                "[::1]:7443",
                "host:99999",
                "a:b:c",
                "/nonexistent",
                "1GiB",
                "-5s",
                "sha256:"
            ])
        ),
    }
}

/// One text mutation of a config file.
fn mutate(g: &mut Gen, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..g.rng.usize(1..4) {
        if lines.is_empty() {
            lines.push(format!("x = {}", hostile_value(g)));
            continue;
        }
        let i = g.rng.usize(..lines.len());
        match g.rng.u8(..7) {
            // Change a value.
            0..=2 => {
                if let Some(eq) = lines[i].find('=') {
                    let key = lines[i][..eq].trim_start_matches('#').to_owned();
                    lines[i] = format!("{key}= {}", hostile_value(g));
                }
            }
            3 => {
                lines.remove(i);
            }
            4 => {
                let dup = lines[i].clone();
                lines.insert(i, dup);
            }
            // Uncomment a line (examples document optional keys in comments).
            5 => lines[i] = lines[i].trim_start_matches("# ").to_owned(),
            _ => {
                let mut bytes = lines[i].clone().into_bytes();
                g.mutate_bytes(&mut bytes);
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn controller_config_parser_holds() {
    let base = example("controller.toml");
    let file = "/etc/rpool/controller.toml";
    run("controller.toml", |g| {
        let text = mutate(g, &base);
        match rpool_controller::config::Config::from_toml(file, &text) {
            Ok(config) => match config.validate() {
                Ok(()) => {
                    let l = &config.liveness;
                    assert!(l.suspect_after_ms < l.down_after_ms, "validated liveness {l:?}");
                    assert!(config.id >= 1);
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            },
            Err(e) => assert!(
                e.to_string().starts_with(file),
                "error does not name the file: {e}"
            ),
        }
    });
}

#[test]
fn agent_config_parser_holds() {
    let base = example("agent.toml");
    let file = "/etc/rpool/agent.toml";
    run("agent.toml", |g| {
        let text = mutate(g, &base);
        match rpool_agent::config::Config::from_toml(&text, file) {
            Ok(config) => {
                if config.validate().is_ok() {
                    assert!(!config.controllers.is_empty() && config.controllers.len() <= 7);
                }
            }
            Err(e) => assert!(e.to_string().contains(file), "error does not name the file: {e}"),
        }
    });
}

#[test]
fn ctl_config_parser_holds() {
    let base = example("ctl.toml");
    let file = Path::new("/home/admin/.config/rpool/ctl.toml");
    run("ctl.toml", |g| {
        let text = mutate(g, &base);
        match rpoolctl::settings::CtlConfig::parse(file, &text) {
            Ok(config) => {
                if let Some(list) = &config.controllers {
                    assert!(!list.is_empty() && list.len() <= 7);
                }
            }
            Err(e) => assert!(
                format!("{e:?}").contains("ctl.toml"),
                "error does not name the file: {e:?}"
            ),
        }
    });
}

#[test]
fn simulated_host_file_parser_holds() {
    let base = example("simulated-host.toml");
    run("simulated-host.toml", |g| {
        let text = mutate(g, &base);
        let file = "/etc/rpool/simulated-host.toml";
        match rpool_agent::simulate::parse(&text, file) {
            Ok(h) => {
                assert!(h.logical_cores >= 1);
                assert!(h.cpu_percent.is_finite() && (0.0..=100.0).contains(&h.cpu_percent));
                assert!(h.memory_used_bytes <= h.memory_bytes);
            }
            Err(e) => assert!(
                e.to_string().starts_with(file),
                "error does not name the file: {e}"
            ),
        }
    });
}
