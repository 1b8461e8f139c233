//! Mutual TLS for the hub: the server's rustls configuration, the accept loop
//! that turns TCP connections into [`AuthenticatedConn`]s for tonic, the one
//! accessor handlers use to learn who called ([`peer_of`]), and the client
//! TLS configuration.
//!
//! Owns: the TLS policy (client certificate required and verified against
//! the hub's CA and CRLs, ALPN `h2`, no session resumption), the handshake
//! timeout, and how a connection's [`PeerInfo`] reaches tonic handlers.
//!
//! Must never: yield a connection whose client certificate was not verified
//! or names no organisation, let one client's handshake hold up other
//! accepts, yield an error item to tonic, or log key material.
//!
//! Wiring: `Server::builder().add_service(..).serve_with_incoming(incoming(listener, rx))`
//! — and do NOT also call `Server::tls_config`: the streams are already TLS.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{Error, Result};
use crate::identity::{PeerIdentity, identify};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are dropped at once.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Authenticated connections waiting for tonic to take them.
const ACCEPTED_QUEUE: usize = 64;
/// Pause after an accept error that is not about one connection (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Who is on the other end of a connection. tonic puts it in every request's
/// extensions; read it with [`peer_of`].
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub identity: PeerIdentity,
    pub remote_addr: SocketAddr,
}

/// The authenticated caller of `request`.
///
/// tonic calls [`Connected::connect_info`] on each connection yielded by
/// [`incoming`] and inserts the result, a [`PeerInfo`] itself (not wrapped in
/// `TlsConnectInfo` or `TcpConnectInfo`), into the extensions of every request
/// on that connection; this is `request.extensions().get::<PeerInfo>()`.
/// Because the connection type is ours, tonic's own `request.remote_addr()`
/// and `request.peer_certs()` return `None`: use this instead.
///
/// `None` means the request did not come through [`incoming`] (e.g. a test
/// calling a handler directly).
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// Like [`peer_of`], but a missing peer is [`Error::Unauthenticated`].
pub fn require_peer<T>(request: &tonic::Request<T>) -> Result<&PeerInfo> {
    peer_of(request).ok_or_else(|| {
        Error::Unauthenticated("the request carries no authenticated organisation".into())
    })
}

/// The hub's rustls server configuration: ring provider, TLS 1.2/1.3, client
/// certificate required and verified against `ca_pem` (and against `crls_pem`,
/// each holding one or more PEM CRLs, if any), ALPN `h2`, no resumption (so
/// every connection is verified against the current CA and CRLs).
///
/// With CRLs, a client whose revocation status they do not cover is refused
/// (fail closed): give the CRL of the CA that issues client certificates. A
/// CRL past its nextUpdate is still used (rustls' default).
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    crls_pem: &[String],
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        Arc::clone(&provider),
    )
    .with_crls(parse_crls(crls_pem)?)
    .build()
    .map_err(|e| Error::Tls(format!("client certificate verifier: {e}")))?;
    let certs = parse_certs(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| Error::Certificate("the server key is not a valid PEM private key".into()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// tonic's client TLS configuration (ring) trusting only `ca_pem`, presenting
/// the organisation certificate `cert_pem`/`key_pem`, and expecting the server
/// certificate to name `domain` (e.g. `"localhost"`). PEM problems surface
/// when the channel connects.
pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str, domain: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(domain)
}

/// Accepts TCP connections from `listener`, completes the TLS handshake of
/// each in its own task (at most [`HANDSHAKE_TIMEOUT`]), and yields those
/// whose verified client certificate names an organisation.
///
/// Each handshake uses the configuration current when the TCP connection was
/// accepted, so sending a new one on the watch channel (e.g. with reloaded
/// CRLs) applies to new connections without a restart. Rejected connections
/// are logged with `tracing::warn!` and dropped; the stream never yields an
/// `Err`. The accept loop stops, closing the listener, once the stream is
/// dropped.
///
/// # Panics
///
/// If called outside a Tokio runtime (it spawns the accept loop).
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
) -> impl Stream<Item = std::result::Result<AuthenticatedConn, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, config, tx));
    ReceiverStream::new(rx)
}

type ConnSender = mpsc::Sender<std::result::Result<AuthenticatedConn, io::Error>>;

async fn accept_loop(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    tx: ConnSender,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => spawn_handshake(tcp, peer, &config, &tx, &handshakes),
            Err(error) => on_accept_error(error).await,
        }
    }
}

/// Starts the handshake of one connection in its own task.
fn spawn_handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &watch::Receiver<Arc<ServerConfig>>,
    tx: &ConnSender,
    handshakes: &Arc<Semaphore>,
) {
    let Ok(permit) = Arc::clone(handshakes).try_acquire_owned() else {
        tracing::warn!(%peer, reason = "too many TLS handshakes in progress", "connection dropped");
        return;
    };
    let acceptor = TlsAcceptor::from(Arc::clone(&config.borrow()));
    let tx = tx.clone();
    tokio::spawn(async move {
        let result = handshake(acceptor, tcp, peer).await;
        drop(permit);
        match result {
            Ok(conn) => {
                if tx.send(Ok(conn)).await.is_err() {
                    tracing::debug!(%peer, "server stopped; authenticated connection dropped");
                }
            }
            Err(reason) => tracing::warn!(%peer, %reason, "connection rejected"),
        }
    });
}

/// TLS handshake with a deadline, then the peer's organisation identity.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<AuthenticatedConn> {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
    }
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| Error::Tls(format!("handshake not done within {HANDSHAKE_TIMEOUT:?}")))?
        .map_err(|e| Error::Tls(format!("handshake failed: {e}")))?;
    let identity = peer_identity(&stream)?;
    Ok(AuthenticatedConn {
        stream,
        peer: PeerInfo {
            identity,
            remote_addr: peer,
        },
    })
}

/// The organisation named by the (verified) first peer certificate.
fn peer_identity(stream: &TlsStream<TcpStream>) -> Result<PeerIdentity> {
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| Error::Certificate("the client presented no certificate".into()))?;
    identify(leaf)
}

async fn on_accept_error(error: io::Error) {
    tracing::warn!(%error, "accepting a TCP connection failed");
    let about_one_connection = matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    );
    if !about_one_connection {
        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
    }
}

/// A TLS connection whose client certificate was verified and names an
/// organisation. Reads and writes go straight to the TLS stream.
pub struct AuthenticatedConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl AuthenticatedConn {
    /// Who is connected, and from where.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The connected organisation.
    pub fn identity(&self) -> &PeerIdentity {
        &self.peer.identity
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer.remote_addr
    }
}

impl std::fmt::Debug for AuthenticatedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedConn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connected for AuthenticatedConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for AuthenticatedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The trust store for client certificates: every certificate in `ca_pem`.
fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| Error::Certificate(format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Every certificate in `pem`; none is an error naming `what`.
fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(format!("{what}: invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Certificate(format!(
            "{what}: no certificate in the PEM"
        )));
    }
    Ok(certs)
}

/// Every CRL in every entry of `crls_pem`; an entry without one is an error.
fn parse_crls(crls_pem: &[String]) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let mut crls = Vec::new();
    for (index, pem) in crls_pem.iter().enumerate() {
        let found = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Certificate(format!("CRL #{index}: invalid PEM: {e}")))?;
        if found.is_empty() {
            return Err(Error::Certificate(format!(
                "CRL #{index}: no X509 CRL in the PEM"
            )));
        }
        crls.extend(found);
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, DevPkiPaths, IssuedCert, Validity, init_dev_pki};
    use rustls::ClientConfig;
    use rustls_pki_types::ServerName;
    use std::convert::Infallible;
    use std::fs;
    use tokio::io::AsyncReadExt;
    use tokio_rustls::TlsConnector;
    use tokio_stream::StreamExt;

    /// Generous bound so a broken test fails instead of hanging; never slept.
    const TEST_DEADLINE: Duration = Duration::from_secs(10);

    struct Pki {
        _dir: tempfile::TempDir,
        ca: CertAuthority,
        server: IssuedCert,
        bank: IssuedCert,
        police: IssuedCert,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let orgs = vec!["bank".to_string(), "police".to_string()];
            init_dev_pki(dir.path(), &orgs, &["localhost", "127.0.0.1"]).unwrap();
            let paths = DevPkiPaths::new(dir.path());
            let read = |p: std::path::PathBuf| fs::read_to_string(p).unwrap();
            let pair = |cert, key| IssuedCert {
                cert_pem: read(cert),
                key_pem: read(key),
            };
            Pki {
                ca: CertAuthority::load(&read(paths.ca_cert()), &read(paths.ca_key())).unwrap(),
                server: pair(paths.server_cert(), paths.server_key()),
                bank: pair(paths.org_cert("bank"), paths.org_key("bank")),
                police: pair(paths.org_cert("police"), paths.org_key("police")),
                _dir: dir,
            }
        }

        fn server_config(&self, crls: &[String]) -> Arc<ServerConfig> {
            server_config(
                self.ca.cert_pem(),
                &self.server.cert_pem,
                &self.server.key_pem,
                crls,
            )
            .unwrap()
        }
    }

    type Conns =
        Pin<Box<dyn Stream<Item = std::result::Result<AuthenticatedConn, io::Error>> + Send>>;

    /// A listener on 127.0.0.1, port 0, wrapped by `incoming`.
    async fn serve(
        config: Arc<ServerConfig>,
    ) -> (SocketAddr, Conns, watch::Sender<Arc<ServerConfig>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(config);
        (addr, Box::pin(incoming(listener, rx)), tx)
    }

    async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        client: Option<&IssuedCert>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten());
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let mut config = match client {
            Some(c) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                        .collect::<std::result::Result<_, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// Panics unless the server refuses this client: the handshake fails, or
    /// (TLS 1.3, where the client finishes first) the connection then ends
    /// without data. Returns once the server has made up its mind.
    async fn assert_refused(addr: SocketAddr, ca_pem: &str, client: Option<&IssuedCert>) {
        let outcome = tokio::time::timeout(TEST_DEADLINE, async {
            match connect(addr, ca_pem, client).await {
                Err(_) => Ok(()),
                Ok(mut stream) => match stream.read(&mut [0u8; 16]).await {
                    Err(_) | Ok(0) => Ok(()),
                    Ok(n) => Err(format!(
                        "server sent {n} bytes to a client it should refuse"
                    )),
                },
            }
        })
        .await
        .expect("the server neither accepted nor refused the client");
        outcome.unwrap();
    }

    async fn next_conn(conns: &mut Conns) -> AuthenticatedConn {
        tokio::time::timeout(TEST_DEADLINE, conns.next())
            .await
            .expect("no connection yielded")
            .expect("stream ended")
            .expect("stream yielded an error")
    }

    #[tokio::test]
    async fn a_client_with_an_org_certificate_is_yielded_with_its_identity() {
        let pki = Pki::new();
        let (addr, mut conns, _tx) = serve(pki.server_config(&[])).await;

        let client = connect(addr, pki.ca.cert_pem(), Some(&pki.bank))
            .await
            .unwrap();
        let conn = next_conn(&mut conns).await;

        assert_eq!(conn.identity().org_id, "bank");
        assert_eq!(conn.remote_addr(), client.get_ref().0.local_addr().unwrap());
        assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let bank_der = CertificateDer::from_pem_slice(pki.bank.cert_pem.as_bytes()).unwrap();
        assert_eq!(conn.identity(), &identify(&bank_der).unwrap());
        assert_eq!(conn.connect_info().identity.org_id, "bank");
        assert!(conn.stream.get_ref().0.nodelay().unwrap());
    }

    #[tokio::test]
    async fn bad_clients_are_dropped_and_the_loop_keeps_serving() {
        let pki = Pki::new();
        let (addr, mut conns, _tx) = serve(pki.server_config(&[])).await;
        let ca = pki.ca.cert_pem();
        let foreign = CertAuthority::generate("foreign ca").unwrap();
        let foreign_cert = foreign.issue_client("bank", Validity::days(1)).unwrap();
        let expired = pki.ca.issue_client("bank", Validity::expired()).unwrap();
        let no_org = pki.ca.issue_with_uri_sans_for_tests(&[]).unwrap();

        assert_refused(addr, ca, None).await;
        assert_refused(addr, ca, Some(&foreign_cert)).await;
        assert_refused(addr, ca, Some(&expired)).await;
        assert_refused(addr, ca, Some(&no_org)).await;

        // Anything yielded for the refused clients would come first.
        let _client = connect(addr, ca, Some(&pki.police)).await.unwrap();
        assert_eq!(next_conn(&mut conns).await.identity().org_id, "police");
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_others() {
        let pki = Pki::new();
        let (addr, mut conns, _tx) = serve(pki.server_config(&[])).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();

        let _client = connect(addr, pki.ca.cert_pem(), Some(&pki.bank))
            .await
            .unwrap();
        assert_eq!(next_conn(&mut conns).await.identity().org_id, "bank");
    }

    #[tokio::test]
    async fn a_new_config_with_a_crl_applies_to_new_connections() {
        let pki = Pki::new();
        let (addr, mut conns, tx) = serve(pki.server_config(&[])).await;
        let ca = pki.ca.cert_pem();

        let _before = connect(addr, ca, Some(&pki.bank)).await.unwrap();
        let first = next_conn(&mut conns).await;
        assert_eq!(first.identity().org_id, "bank");

        let crl = pki.ca.crl_pem(&[&first.identity().cert_serial]).unwrap();
        tx.send(pki.server_config(&[crl])).unwrap();

        assert_refused(addr, ca, Some(&pki.bank)).await;
        let _police = connect(addr, ca, Some(&pki.police)).await.unwrap();
        assert_eq!(next_conn(&mut conns).await.identity().org_id, "police");
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_listener() {
        let pki = Pki::new();
        let (addr, conns, _tx) = serve(pki.server_config(&[])).await;
        drop(conns);
        tokio::time::timeout(TEST_DEADLINE, async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the listener stayed open after the stream was dropped");
    }

    #[test]
    fn server_config_rejects_bad_inputs() {
        let pki = Pki::new();
        let (ca, cert, key) = (pki.ca.cert_pem(), &pki.server.cert_pem, &pki.server.key_pem);
        let cases = [
            server_config("", cert, key, &[]),
            server_config(ca, "", key, &[]),
            server_config(ca, cert, "", &[]),
            server_config(ca, cert, &pki.bank.key_pem, &[]),
            server_config(ca, cert, key, &[String::new()]),
            server_config(ca, cert, key, &["not pem".to_string()]),
        ];
        for (index, case) in cases.into_iter().enumerate() {
            let err = case.expect_err(&format!("case {index} should fail"));
            assert!(
                matches!(err, Error::Certificate(_) | Error::Tls(_)),
                "case {index}: {err}"
            );
        }
        let crl = pki.ca.crl_pem(&[]).unwrap();
        assert_eq!(
            server_config(ca, cert, key, &[crl]).unwrap().alpn_protocols,
            vec![b"h2".to_vec()]
        );
    }

    /// A hand-written gRPC service (no codegen in this crate) answering every
    /// call with an OK status whose message is the caller's org id.
    #[derive(Clone)]
    struct WhoAmI;

    impl tonic::server::NamedService for WhoAmI {
        const NAME: &'static str = "test.WhoAmI";
    }

    impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for WhoAmI {
        type Response = tonic::codegen::http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<std::result::Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _cx: &mut Context<'_>,
        ) -> Poll<std::result::Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(
            &mut self,
            request: tonic::codegen::http::Request<tonic::body::Body>,
        ) -> Self::Future {
            let request = tonic::Request::from_http(request);
            assert!(
                request.remote_addr().is_none(),
                "tonic's own accessor stays empty"
            );
            let status = match require_peer(&request) {
                Ok(peer) => tonic::Status::new(tonic::Code::Ok, peer.identity.org_id.clone()),
                Err(e) => tonic::Status::from(e),
            };
            std::future::ready(Ok(status.into_http()))
        }
    }

    #[tokio::test]
    async fn a_tonic_handler_sees_the_callers_org() {
        use tonic::codegen::Service;
        use tonic::codegen::http;

        let pki = Pki::new();
        let (addr, conns, _tx) = serve(pki.server_config(&[])).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WhoAmI)
                .serve_with_incoming(conns),
        );
        let tls = client_tls(
            pki.ca.cert_pem(),
            &pki.police.cert_pem,
            &pki.police.key_pem,
            "localhost",
        );
        let mut channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();

        let request = http::Request::builder()
            .method("POST")
            .uri(format!("https://{addr}/test.WhoAmI/Who"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::default())
            .unwrap();
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .unwrap();
        let response = tokio::time::timeout(TEST_DEADLINE, channel.call(request))
            .await
            .unwrap()
            .unwrap();

        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
        assert_eq!(status.message(), "police");
    }
}
