//! The sandbox's own PKI under `{dir}/pki`: a CA made at every `sandbox up`,
//! a certificate per controller (SANs: its loopback address, localhost), an
//! admin certificate for the `ctl.toml` the sandbox writes, and one per
//! agent in `{state_dir}/tls`, issued for a host id written before the agent
//! first starts (the agent keeps its id in `{state_dir}/host_id`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpool_proto::pki::{self, Ca, Identity};
use rpool_proto::tls::TlsFiles;

/// Validity of every sandbox certificate.
pub const SANDBOX_CERT_TTL: Duration = Duration::from_secs(30 * 86_400);

/// `{dir}/pki`.
pub fn pki_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("pki")
}

/// The admin files `ctl.toml` points at.
pub fn admin_files(sandbox_dir: &Path) -> TlsFiles {
    TlsFiles::in_dir(&pki_dir(sandbox_dir), "admin")
}

/// Controller `id`'s files (CA key for enrollment next to them).
pub fn controller_files(sandbox_dir: &Path, id: u64) -> TlsFiles {
    TlsFiles::in_dir(&pki_dir(sandbox_dir), &format!("controller-{id}"))
}

/// A controller's `[tls]` section (pure).
pub fn controller_tls_toml(sandbox_dir: &Path, id: u64) -> String {
    let files = controller_files(sandbox_dir, id);
    format!(
        "\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\nca_key = {:?}\n",
        files.ca.display().to_string(),
        files.cert.display().to_string(),
        files.key.display().to_string(),
        pki_dir(sandbox_dir).join("ca.key").display().to_string()
    )
}

/// The `[tls]` section of the managed `ctl.toml` (pure).
pub fn ctl_tls_toml(sandbox_dir: &Path) -> String {
    let files = admin_files(sandbox_dir);
    format!(
        "\n# The sandbox's own CA and admin certificate.\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        files.ca.display().to_string(),
        files.cert.display().to_string(),
        files.key.display().to_string()
    )
}

fn write_pair(dir: &Path, name: &str, issued: &pki::Issued) -> anyhow::Result<()> {
    pki::write_public(&dir.join(format!("{name}.crt")), issued.cert_pem.as_bytes())?;
    pki::write_private(&dir.join(format!("{name}.key")), issued.key_pem.as_bytes())?;
    Ok(())
}

/// Makes a fresh CA and the controller and admin certificates under
/// `{dir}/pki` (replacing any previous ones); returns the CA for the agents.
pub fn create(sandbox_dir: &Path, addresses: &[String]) -> anyhow::Result<Ca> {
    let dir = pki_dir(sandbox_dir);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!("{}: {e}", dir.display()));
        }
        _ => {}
    }
    let ca = Ca::generate("rpool sandbox CA")?;
    pki::write_public(&dir.join("ca.crt"), ca.cert_pem().as_bytes())?;
    pki::write_private(&dir.join("ca.key"), ca.key_pem().as_bytes())?;
    for (i, address) in addresses.iter().enumerate() {
        let id = i as u64 + 1;
        let (_, host) = rpool_proto::tls::split_addr(address)?;
        let mut sans = vec![host];
        for extra in ["localhost", "127.0.0.1"] {
            if !sans.iter().any(|s| s == extra) {
                sans.push(extra.to_string());
            }
        }
        let issued = ca.issue(&Identity::Controller(id), &sans, SANDBOX_CERT_TTL)?;
        write_pair(&dir, &format!("controller-{id}"), &issued)?;
    }
    let admin = ca.issue(&Identity::Admin("sandbox".into()), &[], SANDBOX_CERT_TTL)?;
    write_pair(&dir, "admin", &admin)?;
    Ok(ca)
}

/// Writes a new host id into `{state_dir}/host_id` (one lowercase UUID,
/// the agent's format) and its certificate files into `{state_dir}/tls`.
/// Returns the host id. (Token enrollment can replace this later.)
pub fn issue_agent_tls(ca: &Ca, state_dir: &Path) -> anyhow::Result<String> {
    let host_id = new_host_id()?;
    std::fs::create_dir_all(state_dir).map_err(|e| anyhow::anyhow!("{}: {e}", state_dir.display()))?;
    let id_file = state_dir.join("host_id");
    std::fs::write(&id_file, format!("{host_id}\n"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", id_file.display()))?;
    let issued = ca.issue(&Identity::Agent(host_id.clone()), &[], SANDBOX_CERT_TTL)?;
    let tls = state_dir.join("tls");
    pki::write_public(&tls.join("ca.crt"), ca.cert_pem().as_bytes())?;
    write_pair(&tls, "agent", &issued)?;
    Ok(host_id)
}

/// A random UUID v4 in lowercase hyphenated form, from /dev/urandom.
fn new_host_id() -> anyhow::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| anyhow::anyhow!("/dev/urandom: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_pki_gives_every_process_a_loadable_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let addresses = ["127.0.0.1:7440".to_string(), "127.0.0.1:7441".to_string()];
        let ca = create(tmp.path(), &addresses).unwrap();
        for id in [1, 2] {
            let loaded = controller_files(tmp.path(), id).load().unwrap();
            assert_eq!(loaded.identity, Identity::Controller(id));
        }
        assert_eq!(
            admin_files(tmp.path()).load().unwrap().identity,
            Identity::Admin("sandbox".into())
        );
        let state = tmp.path().join("agents/agent-1/state");
        let host_id = issue_agent_tls(&ca, &state).unwrap();
        assert_eq!(uuid_shape(&host_id), Some(()), "{host_id}");
        assert_eq!(
            std::fs::read_to_string(state.join("host_id")).unwrap(),
            format!("{host_id}\n")
        );
        let agent = TlsFiles::in_dir(&state.join("tls"), "agent").load().unwrap();
        assert_eq!(agent.identity, Identity::Agent(host_id));
        // The [tls] sections parse where they are used.
        let ctl = crate::sandbox::managed_config(&addresses) + &ctl_tls_toml(tmp.path());
        let parsed = crate::settings::CtlConfig::parse(Path::new("ctl.toml"), &ctl).unwrap();
        assert_eq!(parsed.tls.unwrap().cert, Some(admin_files(tmp.path()).cert));
        assert!(controller_tls_toml(tmp.path(), 2).contains("controller-2.key"));
    }

    fn uuid_shape(id: &str) -> Option<()> {
        let parts: Vec<&str> = id.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        (lens == [8, 4, 4, 4, 12]
            && id
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && parts[2].starts_with('4'))
        .then_some(())
    }
}
