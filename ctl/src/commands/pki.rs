//! `rpoolctl pki ...`: the rpool certificate authority on the admin's
//! machine: `init` (CA, controller and admin certificates), `admin-cert`
//! (another admin), `controller-cert` (a new or replacement controller, in
//! `pki_controller_cert.rs`), `pin` (the CA pin agents enroll with).
//!
//! Private keys are written 0600 (directories 0700), atomically; nothing is
//! overwritten without `--force`, and a refusal writes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use rpool_proto::pki::{self, Ca, Identity};
use serde::Serialize;

use crate::exit::Failure;
use crate::output::{self, Format, OutputArgs};

/// Validity of controller certificates made here.
pub const CONTROLLER_CERT_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Validity of admin certificates made here.
pub const ADMIN_CERT_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Largest controller id (Raft node ids; 0 is reserved).
const MAX_CONTROLLER_ID: u64 = 1 << 63;
/// Most controllers in one group.
const MAX_CONTROLLERS: usize = 7;

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA, a certificate per controller and an admin certificate
    Init(InitArgs),
    /// Issue another admin certificate from the CA in --dir
    AdminCert(AdminCertArgs),
    /// Issue a certificate for a new or replacement controller from the CA in --dir
    ControllerCert(super::pki_controller_cert::ControllerCertArgs),
    /// Print the CA pin (sha256 of its public key) that agents enroll with
    Pin(PinArgs),
}

/// Create the rpool PKI in a directory: `ca.crt`, `ca.key`,
/// `controller-ID.crt`/`.key` for every --peer (SANs: the address's
/// host, localhost and 127.0.0.1), `admin.crt`/`.key`. Prints the CA pin and
/// where each file goes.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pki init --dir ./pki --peer 1=10.0.0.11:7443 \\
      --peer 2=10.0.0.12:7443 --peer 3=10.0.0.13:7443
  rpoolctl pki init --dir ./pki --peer 1=ctl-1.example:7443 --admin alice")]
pub struct InitArgs {
    /// Directory to write the files to (created 0700 if missing)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A controller as ID=HOST:PORT (the address agents and peers use, as in
    /// controller.toml's [[peers]]); repeat for each. (Not --controller: that
    /// global flag names the controllers rpoolctl talks to.)
    #[arg(long = "peer", value_name = "ID=ADDR", required = true)]
    pub controllers: Vec<String>,
    /// Name of the admin certificate's identity
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub admin: String,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

/// Issue another admin certificate (`admin-NAME.crt`/`.key` in --dir)
/// from the CA in --dir (`ca.crt`, `ca.key`).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pki admin-cert alice --dir ./pki")]
pub struct AdminCertArgs {
    /// Admin name (letters, digits, . _ - @; at most 128)
    pub name: String,
    /// Directory holding ca.crt and ca.key; the new files go there too
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

/// Print the pin of a CA certificate: `sha256:` and the hex SHA-256 of its
/// SubjectPublicKeyInfo (like kubeadm's discovery-token-ca-cert-hash).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pki pin --ca ./pki/ca.crt
  rpoolctl pki pin --ca /etc/rpool/pki/ca.crt -o json")]
pub struct PinArgs {
    /// CA certificate (PEM)
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn exec(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init(args) => init(args),
        PkiCommand::AdminCert(args) => admin_cert(args),
        PkiCommand::ControllerCert(args) => super::pki_controller_cert::exec(args),
        PkiCommand::Pin(args) => pin(args),
    }
}

/// One `--peer ID=ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSpec {
    pub id: u64,
    pub address: String,
    /// SANs: the address's host, localhost, 127.0.0.1.
    pub sans: Vec<String>,
}

/// Parses and checks every `--peer` (pure).
pub fn parse_controllers(values: &[String]) -> Result<Vec<ControllerSpec>, Failure> {
    if values.len() > MAX_CONTROLLERS {
        return Err(Failure::usage(format!(
            "--peer: {} given (accepted 1..={MAX_CONTROLLERS})",
            values.len()
        )));
    }
    let mut out: Vec<ControllerSpec> = Vec::new();
    for value in values {
        let bad = |problem: String| {
            Failure::usage(format!(
                "--peer {value:?}: {problem} (accepted ID=HOST:PORT, ID in 1..={MAX_CONTROLLER_ID}, e.g. 1=10.0.0.11:7443)"
            ))
        };
        let (id, address) = value.split_once('=').ok_or_else(|| bad("no '='".to_string()))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| (1..=MAX_CONTROLLER_ID).contains(id))
            .ok_or_else(|| bad(format!("id {id:?} is out of range")))?;
        let address = address.trim();
        let (_, host) = rpool_proto::tls::split_addr(address).map_err(|e| bad(e.to_string()))?;
        if out.iter().any(|c| c.id == id) {
            return Err(bad(format!("id {id} is given twice")));
        }
        let mut sans = vec![host];
        for extra in ["localhost", "127.0.0.1"] {
            if !sans.iter().any(|s| s == extra) {
                sans.push(extra.to_string());
            }
        }
        out.push(ControllerSpec {
            id,
            address: address.to_string(),
            sans,
        });
    }
    Ok(out)
}

/// Files `init` writes, in order (pure).
pub fn init_files(dir: &Path, controllers: &[ControllerSpec]) -> Vec<PathBuf> {
    let mut files = vec![dir.join("ca.crt"), dir.join("ca.key")];
    for c in controllers {
        files.push(dir.join(format!("controller-{}.crt", c.id)));
        files.push(dir.join(format!("controller-{}.key", c.id)));
    }
    files.push(dir.join("admin.crt"));
    files.push(dir.join("admin.key"));
    files
}

/// Refuses (exit 64, nothing written) when any of `files` exists and
/// `force` is off.
pub(crate) fn refuse_existing(files: &[PathBuf], force: bool) -> Result<(), Failure> {
    if force {
        return Ok(());
    }
    let existing: Vec<String> = files
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "refusing to overwrite {} (pass --force to replace them)",
        existing.join(", ")
    )))
}

pub(crate) fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    pki::write_public(&dir.join(format!("{name}.crt")), cert_pem.as_bytes())?;
    pki::write_private(&dir.join(format!("{name}.key")), key_pem.as_bytes())?;
    Ok(())
}

fn admin_identity(name: &str) -> Result<Identity, Failure> {
    Identity::admin(name).map_err(|e| Failure::usage(format!("admin name: {e}")))
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let controllers = parse_controllers(&args.controllers)?;
    let admin = admin_identity(&args.admin)?;
    refuse_existing(&init_files(&args.dir, &controllers), args.force)?;

    let ca = Ca::generate("rpool CA")?;
    let mut issued = Vec::new();
    for c in &controllers {
        issued.push(ca.issue(&Identity::Controller(c.id), &c.sans, CONTROLLER_CERT_TTL)?);
    }
    let admin_cert = ca.issue(&admin, &[], ADMIN_CERT_TTL)?;
    // Everything is generated before the first file is written.
    pki::write_public(&args.dir.join("ca.crt"), ca.cert_pem().as_bytes())?;
    pki::write_private(&args.dir.join("ca.key"), ca.key_pem().as_bytes())?;
    for (c, pair) in controllers.iter().zip(&issued) {
        write_pair(
            &args.dir,
            &format!("controller-{}", c.id),
            &pair.cert_pem,
            &pair.key_pem,
        )?;
    }
    write_pair(&args.dir, "admin", &admin_cert.cert_pem, &admin_cert.key_pem)?;
    output::print(&init_summary(&args.dir, &controllers, &args.admin, &ca.pin()))
}

/// What `init` prints: the files, the pin and where everything goes.
pub fn init_summary(dir: &Path, controllers: &[ControllerSpec], admin: &str, pin: &str) -> String {
    let d = dir.display();
    let mut text = format!("Wrote the rpool PKI to {d}:\n");
    text.push_str("  ca.crt, ca.key            the CA (ca.key signs every certificate: keep it secret)\n");
    for c in controllers {
        text.push_str(&format!(
            "  controller-{id}.crt/.key   controller {id} ({addr}; names {names})\n",
            id = c.id,
            addr = c.address,
            names = c.sans.join(", ")
        ));
    }
    text.push_str(&format!("  admin.crt/.key            admin {admin:?}\n"));
    text.push_str(&format!("\nCA pin: {pin}\n\nNext:\n"));
    for c in controllers {
        text.push_str(&format!(
            "  controller {id}: copy {d}/ca.crt and {d}/ca.key to /etc/rpool/pki/, \
             {d}/controller-{id}.crt to /etc/rpool/pki/controller.crt and \
             {d}/controller-{id}.key to /etc/rpool/pki/controller.key (keys mode 0600)\n",
            id = c.id
        ));
    }
    text.push_str(&format!(
        "  ca.key signs agent certificates at enrollment and renewal: only controllers agents \
         enroll or renew through need it (in practice all voting controllers, since the leader \
         signs); never copy it to agent hosts or admin machines, and keep {d}/ca.key offline\n"
    ));
    text.push_str(&format!(
        "  rpoolctl: copy {d}/ca.crt, {d}/admin.crt and {d}/admin.key to ~/.config/rpool/pki/ \
         (or point [tls] in ctl.toml at them)\n"
    ));
    text.push_str(&format!(
        "  agents: enroll with a bootstrap token (rpoolctl token create) and the CA pin {pin}\n"
    ));
    text
}

pub(crate) fn load_ca(dir: &Path) -> Result<Ca, Failure> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
    };
    let (cert, key) = (read("ca.crt")?, read("ca.key")?);
    Ca::from_pem(&cert, &key).map_err(|e| Failure::usage(format!("{}: {e}", dir.join("ca.crt").display())))
}

fn admin_cert(args: AdminCertArgs) -> anyhow::Result<()> {
    let admin = admin_identity(&args.name)?;
    let ca = load_ca(&args.dir)?;
    let base = format!("admin-{}", args.name);
    let files = [
        args.dir.join(format!("{base}.crt")),
        args.dir.join(format!("{base}.key")),
    ];
    refuse_existing(&files, args.force)?;
    let issued = ca.issue(&admin, &[], ADMIN_CERT_TTL)?;
    write_pair(&args.dir, &base, &issued.cert_pem, &issued.key_pem)?;
    output::print(&format!(
        "Wrote {} and {} for admin {:?} (valid {} days).\n\
         Give them to the admin with {}/ca.crt; their ctl.toml [tls] points at the three files.\n",
        files[0].display(),
        files[1].display(),
        args.name,
        ADMIN_CERT_TTL.as_secs() / 86_400,
        args.dir.display()
    ))
}

#[derive(Debug, Serialize)]
struct PinView {
    ca: String,
    pin: String,
}

fn pin(args: PinArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.ca)
        .map_err(|e| Failure::usage(format!("{}: {e}", args.ca.display())))?;
    let pin =
        pki::pin_of_cert_pem(&text).map_err(|e| Failure::usage(format!("{}: {e}", args.ca.display())))?;
    match args.output.output {
        Format::Json => output::print_json(&PinView {
            ca: args.ca.display().to_string(),
            pin,
        }),
        Format::Table => output::print(&format!("{pin}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn specs(values: &[&str]) -> Result<Vec<ControllerSpec>, Failure> {
        parse_controllers(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn controllers_parse_with_sans_for_their_host_and_loopback() {
        let list = specs(&["1=10.0.0.11:7443", "2=ctl-2.example:7443", "3=127.0.0.1:7000"]).unwrap();
        assert_eq!(list[0].sans, ["10.0.0.11", "localhost", "127.0.0.1"]);
        assert_eq!(list[1].sans, ["ctl-2.example", "localhost", "127.0.0.1"]);
        assert_eq!(list[2].sans, ["127.0.0.1", "localhost"]);
        for (bad, needle) in [
            ("10.0.0.11:7443", "no '='"),
            ("0=a:1", "out of range"),
            ("x=a:1", "out of range"),
            ("1=nohost", "host:port"),
        ] {
            let err = specs(&[bad]).unwrap_err();
            assert_eq!(err.code, crate::exit::USAGE);
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
            assert!(err.message.contains("accepted ID=HOST:PORT"), "{}", err.message);
        }
        let err = specs(&["1=a:1", "1=b:1"]).unwrap_err();
        assert!(err.message.contains("twice"), "{}", err.message);
    }

    fn init_args(dir: &Path, force: bool) -> InitArgs {
        InitArgs {
            dir: dir.to_path_buf(),
            controllers: vec!["1=127.0.0.1:7443".into(), "2=ctl-2.example:7443".into()],
            admin: "root".into(),
            force,
        }
    }

    #[test]
    fn init_writes_a_working_pki_with_private_keys_0600_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(init_args(&dir, false)).unwrap();
        let specs = specs(&["1=127.0.0.1:7443", "2=ctl-2.example:7443"]).unwrap();
        for file in init_files(&dir, &specs) {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            let want = if file.extension().unwrap() == "key" {
                0o600
            } else {
                0o644
            };
            assert_eq!(mode, want, "{}", file.display());
        }
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        for (name, id) in [
            ("controller-1", Identity::Controller(1)),
            ("controller-2", Identity::Controller(2)),
            ("admin", Identity::Admin("root".into())),
        ] {
            let files = rpool_proto::tls::TlsFiles::in_dir(&dir, name);
            let loaded = files.load().unwrap();
            assert_eq!(loaded.identity, id);
            assert_eq!(loaded.ca_pem, ca);
        }
        // A second init changes nothing without --force.
        let before = std::fs::read(dir.join("ca.key")).unwrap();
        let err = init(init_args(&dir, false)).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);
        init(init_args(&dir, true)).unwrap();
        assert_ne!(std::fs::read(dir.join("ca.key")).unwrap(), before);
    }

    #[test]
    fn admin_cert_is_issued_by_the_existing_ca_and_pin_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init(init_args(&dir, false)).unwrap();
        admin_cert(AdminCertArgs {
            name: "alice".into(),
            dir: dir.clone(),
            force: false,
        })
        .unwrap();
        let loaded = rpool_proto::tls::TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("admin-alice.crt"),
            key: dir.join("admin-alice.key"),
        }
        .load()
        .unwrap();
        assert_eq!(loaded.identity, Identity::Admin("alice".into()));
        let err = admin_cert(AdminCertArgs {
            name: "alice".into(),
            dir: dir.clone(),
            force: false,
        })
        .unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        let err = admin_cert(AdminCertArgs {
            name: "a b".into(),
            dir: dir.clone(),
            force: false,
        })
        .unwrap_err();
        assert!(err.to_string().contains("admin name"), "{err}");
        let err = admin_cert(AdminCertArgs {
            name: "bob".into(),
            dir: tmp.path().join("absent"),
            force: false,
        })
        .unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(err.to_string().contains("ca.crt"), "{err}");

        let ca = Ca::from_pem(
            &std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        assert_eq!(pki::pin_of_cert_pem(&text).unwrap(), ca.pin());
    }

    #[test]
    fn the_summary_says_where_every_file_goes_and_shows_the_pin() {
        let list = specs(&["1=10.0.0.11:7443"]).unwrap();
        let text = init_summary(Path::new("/p"), &list, "admin", "sha256:ab");
        assert!(text.contains("CA pin: sha256:ab"), "{text}");
        assert!(
            text.contains("/p/controller-1.key to /etc/rpool/pki/controller.key"),
            "{text}"
        );
        assert!(text.contains("~/.config/rpool/pki/"), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
    }
}
