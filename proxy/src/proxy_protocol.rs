//! The PROXY protocol (HAProxy's proxy-protocol.txt, v1 text and v2 binary) on the client
//! listeners, with `use-proxy-protocol`: every connection must open with a header naming the
//! client, read before anything else (a TLS ClientHello included) under
//! `proxy-protocol-header-timeout`. A connection without a valid header is closed, as nginx's
//! `listen … proxy_protocol` closes it. Parsing is the `ppp` crate's.

use std::io;
use std::net::SocketAddr;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most bytes a header may take: a v1 header takes at most 107; a v2 header's TLVs are
/// bounded as ingress-nginx's own PROXY listener bounds them (a 4 KiB read buffer).
const MAX_HEADER_BYTES: usize = 4096;

/// What a PROXY header says of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// The client's address and the address it connected to, as the proxy in front saw them;
    /// `None` for v2 `LOCAL` and v1 `UNKNOWN` (the proxy's own connections, health checks) and
    /// for addresses that are not TCP/IP ones.
    pub(crate) addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why a connection's PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("the connection ended before its PROXY header was complete")]
    Closed,
    #[error("the connection did not open with a valid PROXY header")]
    Invalid,
    #[error("the PROXY header is longer than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the PROXY header that opens `stream`; with it, the bytes read after it, which belong
/// to the connection's protocol and must be read again. The caller bounds the time it takes.
pub(crate) async fn read_header(stream: &mut TcpStream) -> Result<(ProxyHeader, Vec<u8>), HeaderError> {
    let mut bytes = Vec::with_capacity(256);
    loop {
        let room = MAX_HEADER_BYTES - bytes.len();
        if room == 0 {
            return Err(HeaderError::TooLarge);
        }
        if (&mut *stream).take(room as u64).read_buf(&mut bytes).await? == 0 {
            return Err(HeaderError::Closed);
        }
        let parsed = HeaderResult::parse(&bytes);
        if parsed.is_incomplete() {
            continue;
        }
        let (header, length) = match parsed {
            HeaderResult::V1(Ok(header)) => (from_v1(&header), header.header.len()),
            HeaderResult::V2(Ok(header)) => (from_v2(&header), header.len()),
            HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => return Err(HeaderError::Invalid),
        };
        let rest = bytes.split_off(length);
        return Ok((header, rest));
    }
}

fn from_v1(header: &v1::Header<'_>) -> ProxyHeader {
    let addresses = match header.addresses {
        v1::Addresses::Tcp4(ip) => Some((
            SocketAddr::from((ip.source_address, ip.source_port)),
            SocketAddr::from((ip.destination_address, ip.destination_port)),
        )),
        v1::Addresses::Tcp6(ip) => Some((
            SocketAddr::from((ip.source_address, ip.source_port)),
            SocketAddr::from((ip.destination_address, ip.destination_port)),
        )),
        v1::Addresses::Unknown => None,
    };
    ProxyHeader { addresses }
}

fn from_v2(header: &v2::Header<'_>) -> ProxyHeader {
    if header.command == v2::Command::Local {
        return ProxyHeader { addresses: None };
    }
    let addresses = match header.addresses {
        v2::Addresses::IPv4(ip) => Some((
            SocketAddr::from((ip.source_address, ip.source_port)),
            SocketAddr::from((ip.destination_address, ip.destination_port)),
        )),
        v2::Addresses::IPv6(ip) => Some((
            SocketAddr::from((ip.source_address, ip.source_port)),
            SocketAddr::from((ip.destination_address, ip.destination_port)),
        )),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    };
    ProxyHeader { addresses }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// The header read from a connection whose client sends `chunks` (one write each) and
    /// then closes its side.
    async fn read_from(chunks: Vec<Vec<u8>>) -> Result<(ProxyHeader, Vec<u8>), HeaderError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                stream.write_all(&chunk).await.unwrap();
                stream.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            stream.shutdown().await.unwrap();
            stream
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let header = read_header(&mut stream).await;
        drop(client.await.unwrap());
        header
    }

    fn v2(source: &str, destination: &str, command: v2::Command) -> Vec<u8> {
        let addresses = (source.parse::<SocketAddr>().unwrap(), destination.parse::<SocketAddr>().unwrap());
        v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addresses)
            .write_tlv(v2::Type::NoOp, b"padding")
            .unwrap()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_v1_header_names_the_client_and_the_rest_is_kept() {
        let (header, rest) =
            read_from(vec![b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\nGET / HTTP/1.1\r\n".to_vec()])
                .await
                .unwrap();
        let expected = ("203.0.113.7:4711".parse().unwrap(), "10.0.0.1:443".parse().unwrap());
        assert_eq!(header.addresses, Some(expected));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_read_whole() {
        let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 80\r\n".to_vec();
        let (first, second) = header.split_at(9);
        let (header, rest) = read_from(vec![first.to_vec(), second.to_vec()]).await.unwrap();
        assert_eq!(header.addresses.unwrap().0, "[2001:db8::7]:4711".parse().unwrap());
        assert!(rest.is_empty());
        let mut binary = v2("203.0.113.7:4711", "10.0.0.1:80", v2::Command::Proxy);
        binary.extend_from_slice(b"tail");
        let (first, second) = binary.split_at(14);
        let (header, rest) = read_from(vec![first.to_vec(), second.to_vec()]).await.unwrap();
        assert_eq!(header.addresses.unwrap().0, "203.0.113.7:4711".parse().unwrap());
        assert_eq!(rest, b"tail");
    }

    #[tokio::test]
    async fn local_and_unknown_headers_name_nobody() {
        let (header, _) = read_from(vec![b"PROXY UNKNOWN\r\n".to_vec()]).await.unwrap();
        assert_eq!(header.addresses, None);
        let local = v2("203.0.113.7:4711", "10.0.0.1:80", v2::Command::Local);
        let (header, _) = read_from(vec![local]).await.unwrap();
        assert_eq!(header.addresses, None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let error = read_from(vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()]).await.unwrap_err();
        assert!(matches!(error, HeaderError::Invalid), "{error}");
        let error = read_from(vec![b"PROXY TCP4 203.0.113.7".to_vec()]).await.unwrap_err();
        assert!(matches!(error, HeaderError::Closed), "{error}");
        let error = read_from(vec![b"PROXY TCP4 999.0.113.7 10.0.0.1 1 2\r\n".to_vec()]).await.unwrap_err();
        assert!(matches!(error, HeaderError::Invalid), "{error}");
    }

    #[tokio::test]
    async fn a_header_beyond_the_limit_is_not_read_further() {
        let mut huge = v2("203.0.113.7:4711", "10.0.0.1:80", v2::Command::Proxy);
        // A v2 header announcing 8 KiB of TLVs.
        huge[14..16].copy_from_slice(&8192u16.to_be_bytes());
        huge.resize(16 + 8192, 0);
        let error = read_from(vec![huge]).await.unwrap_err();
        assert!(matches!(error, HeaderError::TooLarge), "{error}");
    }
}
