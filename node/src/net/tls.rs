//! Mutual TLS: the certificate files a node or client is given, turned into rustls
//! configurations for both ends of a link.
//!
//! Every link is mutual: the side that accepts demands a certificate signed by the
//! cluster's CA (`--tls-ca`) and the side that dials checks that the certificate it is
//! shown is signed by the same CA and names the host it dialed. Nodes and clients alike
//! present their own certificate (`--tls-cert`, `--tls-key`). `scripts/make-certs.sh`
//! makes a CA and such certificates. The three options go together: all or none.
//!
//! **Node and client certificates are told apart.** A node's certificate is good for
//! both ends of a link (extended key usage `serverAuth` and `clientAuth`) and names the
//! node (its `--name`, as a DNS name); a client's is good for `clientAuth` only. A
//! session may go on under a member's name only if its certificate is a node
//! certificate naming that member ([`Tls::admits`], asked when the peer names itself):
//! a client certificate joins as a client and nothing more, and a node certificate
//! speaks only for the node it names. (Certificates name hosts, and DNS names are
//! compared without regard to case: node names that differ only in case cannot be told
//! apart by their certificates.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::sync::Mutex;

use rustls_pki_types::UnixTime;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The certificate options (shared by nodes and client commands).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TlsArgs {
    /// Turn on mutual TLS with this certificate (PEM; the chain, leaf first). Every
    /// link then needs a certificate signed by --tls-ca: other nodes and clients
    /// without one, or speaking plain TCP, are refused. Needs --tls-key and --tls-ca.
    #[arg(
        long,
        value_name = "PEM",
        env = "NODE_TLS_CERT",
        requires_all = ["tls_key", "tls_ca"]
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", env = "NODE_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present a certificate it signed.
    #[arg(long, value_name = "PEM", env = "NODE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

/// Both ends of a mutual TLS link, ready to use.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// The HTTP side's end: the same certificate, no client certificate asked for (a
    /// browser has none; the HTTP token does that job).
    https: TlsAcceptor,
    /// Checks that a certificate is a node certificate naming a given node.
    members: Arc<WebPkiServerVerifier>,
    /// The certificate chain each link's peer presented, by the peer's address, and
    /// when: from the handshake until the peer names itself.
    presented: Arc<Mutex<HashMap<String, Presented>>>,
}

/// A chain a link's peer presented, and when.
type Presented = (std::time::Instant, Vec<CertificateDer<'static>>);

/// Links whose presented certificates are kept at once before stale ones are dropped.
const MAX_PRESENTED: usize = 1024;

/// A link's peer names itself within the authentication deadline, or the link is
/// closed: a chain kept longer than this is stale.
const PRESENTED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(mutual)")
    }
}

impl Tls {
    /// Reads the certificate files, or `None` without `--tls-cert`.
    pub(crate) fn from_args(args: &TlsArgs) -> Result<Option<Self>, String> {
        match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Self::load(cert, key, ca).map(Some),
            _ => Err("--tls-cert, --tls-key and --tls-ca go together".into()),
        }
    }

    /// Reads a certificate chain, its key and the CA certificate.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let chain = certificates(cert)?;
        let roots = {
            let mut roots = RootCertStore::empty();
            for ca_cert in certificates(ca)? {
                roots
                    .add(ca_cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
            Arc::new(roots)
        };
        // Read once; each of the two configurations takes its own copy.
        let private_key = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| format!("{}: no private key in it: {e}", key.display()))?;

        let verifier = WebPkiClientVerifier::builder(Arc::clone(&roots))
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        let server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(|e| {
                format!(
                    "{} and {} do not make a certificate and its key: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        let mut https = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        let members = WebPkiServerVerifier::builder(Arc::clone(&roots))
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            https: TlsAcceptor::from(Arc::new(https)),
            members,
            presented: Arc::default(),
        })
    }

    /// Records the chain the peer at `peer` presented (its handshake just completed).
    pub(crate) fn presented(&self, peer: &str, chain: Option<&[CertificateDer<'_>]>) {
        let now = std::time::Instant::now();
        let mut presented = self.presented.lock().unwrap_or_else(|e| e.into_inner());
        if presented.len() >= MAX_PRESENTED {
            // Links that never named themselves: they are closed, or about to be.
            presented.retain(|_, (at, _)| now.duration_since(*at) < PRESENTED_FOR);
        }
        let chain = chain.unwrap_or_default();
        let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        presented.insert(peer.to_string(), (now, chain));
    }

    /// Whether the peer at `peer` may go on as node `node` (`client`: a client's
    /// session, which any certificate the CA signed may open): only with a node
    /// certificate that names `node`. Asked once, when the peer names itself.
    pub(crate) fn admits(&self, peer: &str, node: &str, client: bool) -> bool {
        let chain = {
            let mut presented = self.presented.lock().unwrap_or_else(|e| e.into_inner());
            presented.remove(peer)
        };
        let Some((_, chain)) = chain else {
            return false;
        };
        if client {
            return true;
        }
        let (Some(leaf), Ok(name)) = (chain.first(), ServerName::try_from(node.to_string())) else {
            return false;
        };
        self.members
            .verify_server_cert(leaf, &chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// The accepting end.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The dialing end.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// The HTTP side's accepting end (HTTPS, server certificate only).
    pub(crate) fn https_acceptor(&self) -> &TlsAcceptor {
        &self.https
    }
}

/// The name a dialed peer's certificate must carry: the host part of `HOST:PORT`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{host}': {e}"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_dialed_host() {
        assert_eq!(
            server_name("coordinator:4697").unwrap(),
            ServerName::try_from("coordinator").unwrap()
        );
        assert!(matches!(
            server_name("127.0.0.1:4697").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:4697").unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn missing_or_wrong_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Tls::load(&missing, &junk, &junk).unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains("missing.pem"),
            "{err}"
        );
        let err = Tls::load(&junk, &junk, &junk).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        let half = TlsArgs {
            tls_cert: Some(junk.clone()),
            ..TlsArgs::default()
        };
        let err = Tls::from_args(&half).unwrap_err();
        assert!(err.contains("go together"), "{err}");
    }
}
