//! TLS for the transport (rustls), driven without blocking from the same mio loop.
//!
//! A TLS connection carries exactly the frames of `FORMAT.md`, handshake first, inside the
//! TLS stream; a plaintext connection is not touched by anything here. [`Session`] makes a
//! rustls connection over a non-blocking socket read and write like the socket itself (the
//! shape of rustls's own mio examples: `read_tls`, `process_new_packets`, the plaintext
//! `reader()`/`writer()`, `write_tls` while it `wants_write`), so the event loop and the
//! non-blocking client keep their buffers and their frame code.
//!
//! # Identities
//!
//! Nodes verify each other against one CA (`--tls-ca`), in both directions: the dialer
//! checks that the acceptor's certificate names the host the configuration gives that node
//! (an IP address or DNS subject alternative name, as any TLS client does); the acceptor,
//! once the hello says which node id dials, checks that the dialer's certificate names the
//! host the configuration gives *that* id ([`NodeTls::check_node`]), so one node's
//! certificate cannot pose as another. Clients need only trust the node's CA, unless a
//! client CA is configured: then a client certificate signed by it is mandatory, and its
//! common name decides whether the client may run admin operations ([`NodeTls::check_client`]).

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;

/// The crypto provider every TLS setting here is built with (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; at least one, else a one-line error naming the flag.
pub fn load_certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certificates)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "{flag} {}: no PEM private key in it ({e}; expected \"-----BEGIN PRIVATE KEY-----\")",
            path.display()
        )
    })
}

/// A root store holding the CA certificates of a PEM file.
fn load_roots(flag: &str, path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(flag, path)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// The files of a node's TLS settings (`raftd --tls-*`), all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate (chain), presented to peers and clients.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
    /// The CA that signs client certificates; given, clients must present one.
    pub client_ca: Option<PathBuf>,
    /// Common names of client certificates allowed admin operations (with `client_ca`).
    pub admin_names: Vec<String>,
}

/// A node's TLS settings, loaded from [`TlsFiles`] and checked: what the transport accepts
/// and dials with. Replaced whole on a reload ([`crate::Transport::set_tls`]).
pub struct NodeTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    nodes: Arc<dyn ClientCertVerifier>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
    admin_names: Vec<String>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("client_certificates_required", &self.clients.is_some())
            .field("admin_names", &self.admin_names)
            .finish_non_exhaustive()
    }
}

/// What a client's certificate allows, judged once its hello arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRights {
    /// Reads and writes (a client certificate whose name is not listed as admin).
    Client,
    /// Everything, admin operations included (no client certificates configured, or a
    /// certificate whose common name is listed as admin).
    Admin,
}

impl NodeTls {
    /// Loads and checks the files. The error is one line naming the flag and file.
    pub fn load(files: &TlsFiles) -> Result<NodeTls, String> {
        if files.client_ca.is_none() && !files.admin_names.is_empty() {
            return Err(
                "--admin-cn needs --tls-client-ca: admin rights come from client certificates"
                    .into(),
            );
        }
        let certificates = load_certificates("--tls-cert", &files.cert)?;
        let key = load_private_key("--tls-key", &files.key)?;
        let roots = load_roots("--tls-ca", &files.ca)?;
        let nodes = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        let clients = match &files.client_ca {
            None => None,
            Some(path) => Some(
                WebPkiClientVerifier::builder_with_provider(
                    load_roots("--tls-client-ca", path)?,
                    provider(),
                )
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?,
            ),
        };
        let accept = Arc::new(NodeOrClient::new(nodes.clone(), clients.clone()));
        let key_error = |e: rustls::Error| {
            format!(
                "--tls-cert {} and --tls-key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        };
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(accept)
            .with_single_cert(certificates.clone(), key.clone_key())
            .map_err(key_error)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certificates, key)
            .map_err(key_error)?;
        Ok(NodeTls {
            server: Arc::new(server),
            client: Arc::new(client),
            nodes,
            clients,
            admin_names: files.admin_names.clone(),
        })
    }

    /// Whether clients must present a certificate (a client CA is configured).
    pub fn client_certificates_required(&self) -> bool {
        self.clients.is_some()
    }

    /// The session of a connection this node accepted.
    pub(crate) fn accept(&self) -> io::Result<Session> {
        let connection = ServerConnection::new(self.server.clone()).map_err(tls_error)?;
        Ok(Session::new(connection.into()))
    }

    /// The session of a connection this node dials to the node at `host`.
    pub(crate) fn dial(&self, host: &str) -> io::Result<Session> {
        let name = server_name(host)?;
        let connection = ClientConnection::new(self.client.clone(), name).map_err(tls_error)?;
        Ok(Session::new(connection.into()))
    }

    /// Checks the certificate a dialing node presented against the host the configuration
    /// gives its node id: signed by the nodes' CA, and naming that host.
    pub(crate) fn check_node(&self, session: &Session, host: &str) -> Result<(), String> {
        let (end_entity, intermediates) = session
            .peer_chain()
            .ok_or("no certificate presented (nodes must present theirs)")?;
        self.nodes
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| format!("certificate not signed by the nodes' CA: {e}"))?;
        let name = server_name(host).map_err(|e| e.to_string())?;
        let certificate = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        certificate
            .verify_is_valid_for_subject_name(&name)
            .map_err(|_| format!("certificate does not name {host}, this node id's address"))
    }

    /// Judges a client's certificate: with a client CA, one signed by it is required, and
    /// its common name decides admin rights; without, every client has every right.
    pub(crate) fn check_client(&self, session: &Session) -> Result<ClientRights, String> {
        let Some(clients) = &self.clients else {
            return Ok(ClientRights::Admin);
        };
        let (end_entity, intermediates) = session
            .peer_chain()
            .ok_or("no client certificate presented (this node requires one)")?;
        clients
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| format!("client certificate not signed by the client CA: {e}"))?;
        let name = common_name(end_entity);
        Ok(match name {
            Some(name) if self.admin_names.contains(&name) => ClientRights::Admin,
            _ => ClientRights::Client,
        })
    }
}

/// The subject common name of a certificate, if it has one (UTF-8).
pub fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// A TLS server name from a configured host: an IP address or a DNS name.
fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{host}' is no host name for TLS: {e}"),
        )
    })
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS: {}", explain(&error)),
    )
}

/// What rustls said, with the likely cause where one is likely.
pub fn explain(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError, Error as E, InvalidMessage};
    let hint = match error {
        E::InvalidMessage(InvalidMessage::InvalidContentType)
        | E::InvalidMessage(InvalidMessage::UnknownProtocolVersion) => {
            "the other side does not speak TLS (a plaintext node or client?)"
        }
        E::InvalidCertificate(CertificateError::UnknownIssuer)
        | E::InvalidCertificate(CertificateError::BadSignature) => {
            "the certificate is not signed by the CA trusted here"
        }
        E::InvalidCertificate(CertificateError::Expired)
        | E::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the certificate has expired"
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the certificate does not name the host that was dialed"
        }
        E::AlertReceived(Alert::CertificateRequired) => {
            "the node requires a client certificate (--tls-cert and --tls-key)"
        }
        E::AlertReceived(Alert::UnknownCA | Alert::BadCertificate) => {
            "the other side refused this certificate (not signed by the CA it trusts?)"
        }
        E::AlertReceived(Alert::CertificateExpired) => {
            "the other side says this certificate has expired"
        }
        _ => return error.to_string(),
    };
    format!("{error}: {hint}")
}

/// What clients (raftctl, the client library, benchmarks) trust and present.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// Host names for addresses given by name; any other address is checked by its IP.
    names: Vec<(SocketAddr, String)>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the nodes' CA in `ca` and, given `cert_key`, presents that certificate and key
    /// (required where nodes run with a client CA). Errors name the flag and file.
    pub fn load(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Result<ClientTls, String> {
        let roots = load_roots("--tls-ca", ca)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(verifier);
        let config = match cert_key {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    load_certificates("--tls-cert", cert)?,
                    load_private_key("--tls-key", key)?,
                )
                .map_err(|e| {
                    format!(
                        "--tls-cert {} and --tls-key {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?,
        };
        Ok(ClientTls {
            config: Arc::new(config),
            names: Vec::new(),
        })
    }

    /// Checks the node at `addr` by the host name `host` (given as a name, not an address).
    pub fn name(&mut self, addr: SocketAddr, host: &str) {
        self.names.retain(|(a, _)| *a != addr);
        self.names.push((addr, host.to_string()));
    }

    fn host(&self, addr: SocketAddr) -> String {
        self.names
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or_else(|| addr.ip().to_string(), |(_, h)| h.clone())
    }

    /// A rustls client connection to the node at `addr`.
    pub fn connection(&self, addr: SocketAddr) -> io::Result<ClientConnection> {
        ClientConnection::new(self.config.clone(), server_name(&self.host(addr))?)
            .map_err(tls_error)
    }

    /// The session of a non-blocking connection to the node at `addr`.
    pub fn session(&self, addr: SocketAddr) -> io::Result<Session> {
        Ok(Session::new(self.connection(addr)?.into()))
    }
}

/// The one port serves nodes and clients, and the TLS handshake comes before the hello that
/// says which a connection is: so the handshake accepts a certificate of either CA (a node's
/// is required only once the hello says "node"; a client's whenever a client CA is set),
/// and the hello's judge checks it against the one its role calls for.
#[derive(Debug)]
struct NodeOrClient {
    nodes: Arc<dyn ClientCertVerifier>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

impl NodeOrClient {
    fn new(
        nodes: Arc<dyn ClientCertVerifier>,
        clients: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Self {
        let mut hints = nodes.root_hint_subjects().to_vec();
        if let Some(c) = &clients {
            hints.extend(c.root_hint_subjects().iter().cloned());
        }
        NodeOrClient {
            nodes,
            clients,
            hints,
        }
    }
}

impl ClientCertVerifier for NodeOrClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.clients.is_some()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let by_nodes = self
            .nodes
            .verify_client_cert(end_entity, intermediates, now);
        match (&by_nodes, &self.clients) {
            (Err(_), Some(clients)) => clients
                .verify_client_cert(end_entity, intermediates, now)
                .or(by_nodes),
            _ => by_nodes,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.nodes.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.nodes.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.nodes.supported_verify_schemes()
    }
}

/// A TLS session over a non-blocking socket, read and written like the socket: `read`
/// gives plaintext (0 at the end of the stream), `write` takes plaintext, and both return
/// `WouldBlock` when the socket does. Handshake records go out as they are made; bytes
/// rustls still holds for the socket are pushed by [`Session::push`] (write interest is
/// needed while [`Session::wants_write`]).
pub struct Session {
    connection: rustls::Connection,
    /// The socket reported its end.
    eof: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.connection.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over a rustls connection (client or server side).
    pub fn new(connection: rustls::Connection) -> Session {
        Session {
            connection,
            eof: false,
        }
    }

    /// Whether the TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.connection.is_handshaking()
    }

    /// Whether rustls holds bytes for the socket.
    pub fn wants_write(&self) -> bool {
        self.connection.wants_write()
    }

    /// The certificate chain the other side presented: its end entity and intermediates.
    fn peer_chain(&self) -> Option<(&CertificateDer<'static>, &[CertificateDer<'static>])> {
        self.connection
            .peer_certificates()
            .and_then(|chain| chain.split_first())
    }

    /// Reads plaintext: what rustls has decrypted, else what the socket has, decrypted.
    pub fn read<S: Read + Write>(&mut self, socket: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.connection.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.eof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.connection.read_tls(socket)? == 0 {
                self.eof = true;
            }
            if let Err(error) = self.connection.process_new_packets() {
                // rustls queued an alert saying why; it is worth one try.
                let _ = self.connection.write_tls(socket);
                return Err(tls_error(error));
            }
            // Handshake answers leave at once; what the socket does not take waits for `push`.
            match self.push(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes plaintext to send (encrypted into rustls's buffer, then pushed to the socket).
    pub fn write<S: Write>(&mut self, socket: &mut S, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // Twice at most: once more only after the socket took everything rustls held.
        for _ in 0..2 {
            let taken = self.connection.writer().write(data)?;
            let pushed = self.push(socket);
            if taken > 0 {
                return match pushed {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(taken),
                };
            }
            // rustls's buffer was full: it took nothing. Try again only if the socket took
            // everything it held (and the handshake is done, so plaintext can leave).
            pushed?;
            if self.connection.is_handshaking() || self.connection.wants_write() {
                break;
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Writes what rustls holds for the socket until it holds nothing (`Ok`) or the socket
    /// is full (`WouldBlock`).
    pub fn push<S: Write>(&mut self, socket: &mut S) -> io::Result<()> {
        while self.connection.wants_write() {
            match self.connection.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Says goodbye (close_notify), best effort: the connection closes anyway.
    pub fn close<S: Write>(&mut self, socket: &mut S) {
        self.connection.send_close_notify();
        let _ = self.push(socket);
    }
}
