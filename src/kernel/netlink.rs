//! One netlink request/reply exchange, shared by the rtnetlink (routes,
//! links) and generic netlink (WireGuard) queries.
use std::io;

use anyhow::{Context, Result};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_DUMP,
};
use netlink_sys::{Socket, SocketAddr};

/// A netlink socket of `protocol` talking to the kernel, in the current
/// network namespace.
pub fn connect(protocol: isize) -> Result<Socket> {
    let mut socket = Socket::new(protocol).context("opening a netlink socket")?;
    socket.bind_auto().context("binding a netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting a netlink socket")?;
    Ok(socket)
}

/// Sends one request and collects its replies (all parts of a dump). A
/// netlink error comes back as the io::Error of its errno, so callers can
/// match on `raw_os_error()`.
pub fn request<T>(socket: &Socket, payload: T, flags: u16) -> io::Result<Vec<T>>
where
    T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
    NetlinkPayload<T>: From<T>,
{
    let mut msg = NetlinkMessage::from(payload);
    msg.header.flags = flags;
    msg.finalize();
    let mut tx = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut tx);
    socket.send(&tx, 0)?;

    let mut replies = Vec::new();
    loop {
        let (rx, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < rx.len() {
            let reply = NetlinkMessage::<T>::deserialize(&rx[offset..])
                .map_err(|_| io::Error::from_raw_os_error(libc::EBADMSG))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        None => Ok(replies), // an ACK
                    };
                }
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                _ => {}
            }
            // A plain request is answered by one message, a dump ends with Done.
            if flags & NLM_F_DUMP == 0 && !replies.is_empty() {
                return Ok(replies);
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
