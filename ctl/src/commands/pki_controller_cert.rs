//! `rpoolctl pki controller-cert ID ADDR`: a certificate for a new or
//! replacement controller, issued by the existing CA in `--dir`.
//!
//! The files are `controller-ID.crt`/`.key` in `--dir`, exactly as `pki
//! init` names them. A controller replacing a dead one gets a new id (then
//! `rpoolctl controller remove OLD` and `controller add NEW ADDR`);
//! `--force` re-issues an existing id's certificate (a new key, another
//! address or name, before expiry). The SANs are
//! the address's host, localhost, 127.0.0.1 and every `--san`; the
//! certificate also names `controller-ID.rpool.internal` (added by the CA),
//! which is what peers check.

use std::path::PathBuf;

use clap::Args;
use rpool_proto::pki::Identity;

use super::pki::{CONTROLLER_CERT_TTL, load_ca, parse_controllers, refuse_existing, write_pair};
use crate::exit::Failure;
use crate::output;

/// Most extra `--san` values.
const MAX_EXTRA_SANS: usize = 16;

/// Issue a controller certificate (`controller-ID.crt`/`.key` in --dir)
/// from the CA in --dir (`ca.crt`, `ca.key`): for a controller joining the
/// group, e.g. one replacing a dead controller (give it a new id), or with
/// --force to re-issue an existing controller's certificate.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pki controller-cert 4 10.0.0.14:7443 --dir ./pki
  rpoolctl pki controller-cert 2 10.0.0.12:7443 --dir ./pki --force   # re-issue controller 2's
  rpoolctl pki controller-cert 4 ctl-4.example:7443 --san 10.0.0.14 --dir ./pki

Then copy controller-ID.crt/.key to /etc/rpool/pki/controller.crt/.key on the new host,
start it with an empty data dir, and run `rpoolctl controller add ID ADDR`.")]
pub struct ControllerCertArgs {
    /// Controller id (1..=2^63; its Raft node id)
    #[arg(value_name = "ID")]
    pub id: String,
    /// Address agents, peers and rpoolctl reach it at (HOST:PORT)
    #[arg(value_name = "ADDR")]
    pub address: String,
    /// Directory holding ca.crt and ca.key; the new files go there too
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Another DNS name or IP address the controller is reached at (repeatable)
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// Overwrite an existing controller-ID.crt/.key (re-issue)
    #[arg(long)]
    pub force: bool,
}

pub fn exec(args: ControllerCertArgs) -> anyhow::Result<()> {
    let spec = parse_controllers(&[format!("{}={}", args.id, args.address)])?.remove(0);
    let sans = with_extra_sans(spec.sans, &args.sans)?;
    let ca = load_ca(&args.dir)?;
    let base = format!("controller-{}", spec.id);
    let files = [
        args.dir.join(format!("{base}.crt")),
        args.dir.join(format!("{base}.key")),
    ];
    refuse_existing(&files, args.force)?;
    let issued = ca.issue(&Identity::Controller(spec.id), &sans, CONTROLLER_CERT_TTL)?;
    write_pair(&args.dir, &base, &issued.cert_pem, &issued.key_pem)?;
    output::print(&format!(
        "Wrote {crt} and {key} for controller {id} ({addr}; names {names}; valid {days} days).\n\
         Next, on the controller's host: copy {crt} to /etc/rpool/pki/controller.crt, {key} to \
         /etc/rpool/pki/controller.key (mode 0600) and {ca} to /etc/rpool/pki/ca.crt \
         (and ca.key only if agents enroll or renew through it); set id = {id} in \
         /etc/rpool/controller.toml, start it with an empty data dir, then run:\n  \
         rpoolctl controller add {id} {addr}\n",
        crt = files[0].display(),
        key = files[1].display(),
        ca = args.dir.join("ca.crt").display(),
        id = spec.id,
        addr = spec.address,
        names = sans.join(", "),
        days = CONTROLLER_CERT_TTL.as_secs() / 86_400,
    ))
}

/// `base` followed by every `--san` not already in it; each must be a DNS
/// name or an IP literal (pure).
fn with_extra_sans(mut base: Vec<String>, extra: &[String]) -> Result<Vec<String>, Failure> {
    if extra.len() > MAX_EXTRA_SANS {
        return Err(Failure::usage(format!(
            "--san: {} given (accepted 0..={MAX_EXTRA_SANS})",
            extra.len()
        )));
    }
    for san in extra {
        let san = san.trim();
        let is_ip = san.parse::<std::net::IpAddr>().is_ok();
        if !is_ip && !valid_dns_name(san) {
            return Err(Failure::usage(format!(
                "--san {san:?}: not an IP address or DNS name (accepted e.g. 10.0.0.14 or ctl-4.example; \
                 labels of letters, digits and '-', at most 253 characters)"
            )));
        }
        if !base.iter().any(|s| s == san) {
            base.push(san.to_string());
        }
    }
    Ok(base)
}

/// A DNS name: dot-separated labels of 1..=63 ASCII letters, digits and
/// '-' (not at either end), 253 characters at most.
fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::pki::{InitArgs, init};
    use rpool_proto::tls::TlsFiles;
    use std::os::unix::fs::PermissionsExt;

    fn args(dir: &std::path::Path, id: &str, addr: &str, sans: &[&str], force: bool) -> ControllerCertArgs {
        ControllerCertArgs {
            id: id.into(),
            address: addr.into(),
            dir: dir.to_path_buf(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            force,
        }
    }

    fn init_pki(dir: &std::path::Path) {
        init(InitArgs {
            dir: dir.to_path_buf(),
            controllers: vec!["1=10.0.0.11:7443".into(), "2=10.0.0.12:7443".into()],
            admin: "admin".into(),
            force: false,
        })
        .unwrap();
    }

    /// The SAN strings of a PEM leaf, as the TLS stack sees them.
    fn san_text(cert_pem: &str) -> String {
        let der = &rpool_proto::pki::certs_from_pem(cert_pem).unwrap()[0];
        // SAN values are stored as plain bytes in the DER: DNS names as
        // ASCII, IP addresses as their octets.
        String::from_utf8_lossy(der).into_owned()
    }

    #[test]
    fn a_new_controller_gets_a_certificate_from_the_existing_ca_that_names_its_id_and_address() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init_pki(&dir);
        exec(args(
            &dir,
            "4",
            "ctl-4.example:7443",
            &["10.0.0.14", "ctl-4.example"],
            false,
        ))
        .unwrap();

        let loaded = TlsFiles::in_dir(&dir, "controller-4").load().unwrap();
        assert_eq!(loaded.identity, Identity::Controller(4));
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        assert_eq!(loaded.ca_pem, ca_pem);
        let cert_pem = std::fs::read_to_string(dir.join("controller-4.crt")).unwrap();
        rpool_proto::pki::verify_issued_by(&cert_pem, &ca_pem).unwrap();
        let sans = san_text(&cert_pem);
        for name in ["ctl-4.example", "controller-4.rpool.internal", "localhost"] {
            assert!(sans.contains(name), "{name} missing");
        }
        // 10.0.0.14 as an IP SAN: its four octets.
        assert!(
            rpool_proto::pki::certs_from_pem(&cert_pem).unwrap()[0]
                .windows(4)
                .any(|w| w == [10, 0, 0, 14])
        );
        let mode = std::fs::metadata(dir.join("controller-4.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reissuing_an_existing_id_needs_force_and_then_gives_a_new_key_for_the_new_address() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init_pki(&dir);
        let before = std::fs::read(dir.join("controller-2.key")).unwrap();
        let err = exec(args(&dir, "2", "10.0.0.22:7443", &[], false)).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(dir.join("controller-2.key")).unwrap(), before);

        exec(args(&dir, "2", "10.0.0.22:7443", &[], true)).unwrap();
        assert_ne!(std::fs::read(dir.join("controller-2.key")).unwrap(), before);
        let loaded = TlsFiles::in_dir(&dir, "controller-2").load().unwrap();
        assert_eq!(loaded.identity, Identity::Controller(2));
        let der = &rpool_proto::pki::certs_from_pem(&loaded.cert_pem).unwrap()[0];
        assert!(der.windows(4).any(|w| w == [10, 0, 0, 22]));
        assert!(!der.windows(4).any(|w| w == [10, 0, 0, 12]));
    }

    #[test]
    fn bad_input_is_a_usage_error_naming_the_field_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init_pki(&dir);
        for (id, addr, sans, needle) in [
            ("0", "10.0.0.14:7443", &[][..], "out of range"),
            ("x", "10.0.0.14:7443", &[][..], "out of range"),
            ("4", "10.0.0.14", &[][..], "host:port"),
            ("4", "10.0.0.14:7443", &["bad name!"][..], "--san"),
            ("4", "10.0.0.14:7443", &["-x.example"][..], "--san"),
        ] {
            let err = exec(args(&dir, id, addr, sans, false)).unwrap_err();
            assert_eq!(
                crate::exit::code_of(&err),
                crate::exit::USAGE,
                "{id} {addr} {sans:?}"
            );
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(!dir.join("controller-4.crt").exists());
        let err = exec(args(
            &tmp.path().join("absent"),
            "4",
            "10.0.0.14:7443",
            &[],
            false,
        ))
        .unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }

    #[test]
    fn the_clap_command_parses_id_addr_and_repeated_sans() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "rpoolctl",
            "pki",
            "controller-cert",
            "4",
            "10.0.0.14:7443",
            "--dir",
            "/p",
            "--san",
            "a.example",
            "--san",
            "10.0.0.40",
        ])
        .unwrap();
        let crate::commands::Command::Pki(crate::commands::pki::PkiCommand::ControllerCert(a)) = cli.command
        else {
            panic!("not pki controller-cert");
        };
        assert_eq!((a.id.as_str(), a.address.as_str()), ("4", "10.0.0.14:7443"));
        assert_eq!(a.sans, ["a.example", "10.0.0.40"]);
    }
}
