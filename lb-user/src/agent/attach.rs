//! Attachments that outlive the agent: the XDP program and the tc program
//! (neighbour path) stay on the interfaces when the agent exits without
//! being told to detach (SIGKILL, a crash, `lb stop --keep-forwarding`),
//! and the next agent takes them over without a gap.
//!
//! - XDP is a bpf_link pinned in the pin directory as
//!   `link_xdp_IFACE` ([`XDP_LINK_PREFIX`]). A link dies with its last file
//!   descriptor, so without the pin the kernel detaches XDP when the process
//!   ends. A new agent opens the pin and replaces the program in place
//!   (`BPF_LINK_UPDATE`: atomic, no packet sees an interface without XDP).
//! - tc: kernels from 6.6 on attach it as a tcx link, pinned and taken over
//!   the same way (`link_tc_IFACE`, [`TC_LINK_PREFIX`]). Older kernels attach
//!   a netlink cls_bpf filter, which the kernel keeps until it is deleted;
//!   lb gives it a fixed priority and handle ([`TC_PRIORITY`],
//!   [`TC_HANDLE`]), so a new agent replaces that filter in place instead of
//!   adding a second one.
//!
//! Pins of a link that is no longer on its interface (the interface was
//! deleted, XDP detached by hand), in another XDP mode than the one asked
//! for, or of interfaces this agent does not serve are removed (detaching
//! what they held) and the program attached anew, with a warning.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, LinkError, LinkType, PinnedLink},
        tc::{
            NlOptions, SchedClassifier, SchedClassifierLink, TcAttachOptions, TcAttachType,
            TcError, TcHandle,
        },
        xdp::XdpLink,
        LinkOrder, ProgramError, XdpMode,
    },
    util::KernelVersion,
    Ebpf,
};
use thiserror::Error;

use crate::dataplane::{self, DataplaneError};

/// Pin name prefix of an XDP link: `link_xdp_IFACE` in the pin directory.
pub const XDP_LINK_PREFIX: &str = "link_xdp_";
/// Pin name prefix of a tcx link (kernels from 6.6): `link_tc_IFACE`.
pub const TC_LINK_PREFIX: &str = "link_tc_";
/// Priority of lb's netlink cls_bpf filter (kernels before 6.6), fixed so
/// that a restarted agent finds and replaces it: 0x6c62, "lb" in ASCII.
pub const TC_PRIORITY: u16 = 0x6c62;
/// Handle of lb's netlink cls_bpf filter (with [`TC_PRIORITY`]).
pub const TC_HANDLE: TcHandle = TcHandle::new(0, 1);

/// Why an interface could not be attached.
#[derive(Debug, Error)]
pub enum AttachError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("opening the pinned link {}", path.display())]
    OpenPin {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{} is not a {want} link (found {found}): it was not pinned by lb; remove it", path.display())]
    NotOurs {
        path: PathBuf,
        want: &'static str,
        found: String,
    },
    #[error("reading the XDP state of {iface} (rtnetlink)")]
    XdpState {
        iface: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("taking over the pinned link {} on {iface} (replacing its program)", path.display())]
    Replace {
        iface: String,
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching the tc program to {iface} (ingress)")]
    AttachTc {
        iface: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{what} on {iface}")]
    Link {
        iface: String,
        what: &'static str,
        #[source]
        source: Box<LinkError>,
    },
    #[error("pinning {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("removing the stale pin {}", path.display())]
    Unpin {
        path: PathBuf,
        #[source]
        source: Box<io::Error>,
    },
}

type Result<T> = std::result::Result<T, AttachError>;

/// How an interface got its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Attached anew (no earlier attachment, or one that could not be taken over).
    Fresh,
    /// A previous agent's link taken over, its program replaced in place.
    Adopted,
}

/// A pinned bpf_link this agent holds.
#[derive(Debug)]
struct Held {
    link: FdLink,
    path: PathBuf,
    /// Taken over from a previous agent (else attached by this one).
    adopted: bool,
}

impl Held {
    /// Pins a link this agent attached. A link that cannot be pinned is
    /// closed (detached) and the start fails: forwarding must not silently
    /// depend on this process.
    fn pin(link: FdLink, path: PathBuf) -> Result<Held> {
        let pinned = link.pin(&path).map_err(|source| AttachError::Pin {
            path: path.clone(),
            source: Box::new(source),
        })?;
        Ok(Held {
            link: FdLink::from(pinned),
            path,
            adopted: false,
        })
    }

    /// Removes the pin and closes the link: the kernel detaches it.
    fn detach(self) {
        remove_pin(&self.path);
        drop(self.link);
    }

    /// A start failed: a link taken over stays (pinned, running this
    /// start's program on the same maps); one attached anew is detached.
    fn undo(self) {
        if !self.adopted {
            self.detach();
        }
    }
}

/// lb's tc attachment on one interface.
#[derive(Debug)]
enum Tc {
    /// A tcx link (kernels from 6.6).
    Link(Held),
    /// A netlink cls_bpf filter (older kernels): dropping the link deletes
    /// it. `adopted`: a previous agent's filter replaced in place.
    Netlink {
        link: SchedClassifierLink,
        adopted: bool,
    },
}

impl Tc {
    fn detach(self) {
        match self {
            Tc::Link(h) => h.detach(),
            // Dropped: aya deletes the filter.
            Tc::Netlink { link, .. } => drop(link),
        }
    }

    fn keep(self) {
        match self {
            // The pin keeps the link.
            Tc::Link(h) => drop(h.link),
            // Its drop would delete the filter; it holds no descriptor.
            Tc::Netlink { link, .. } => std::mem::forget(link),
        }
    }

    fn undo(self) {
        match self {
            Tc::Link(h) => h.undo(),
            Tc::Netlink { link, adopted } => {
                if adopted {
                    std::mem::forget(link);
                }
            }
        }
    }
}

/// The programs attached to one interface, pinned from the moment they
/// are attached.
///
/// Dropped without [`Attached::detach`] or [`Attached::keep`]: before
/// [`Attached::started`], a failed start, which detaches what it attached
/// anew and leaves what it took over; after it, the agent ends on an error
/// and forwarding is left to the next agent, as after a crash.
#[derive(Debug)]
pub struct Attached {
    pub iface: String,
    pub ifindex: u32,
    /// Whether XDP was taken over from a previous agent.
    pub how: How,
    /// Whether this agent added the interface's clsact qdisc (kernels
    /// before 6.6); removed again when it detaches.
    pub clsact_created: bool,
    /// `None` once released.
    links: Option<(Held, Tc)>,
    started: bool,
}

impl Attached {
    /// The agent has started: from now on a drop leaves the attachment in
    /// place (see the type's doc).
    pub fn started(&mut self) {
        self.started = true;
    }

    /// Detaches XDP and tc from the interface (an explicit stop): the pins
    /// are removed and the links closed.
    pub fn detach(mut self) {
        if let Some((xdp, tc)) = self.links.take() {
            xdp.detach();
            tc.detach();
        }
    }

    /// Leaves XDP and tc attached (`lb stop --keep-forwarding`): the pins
    /// stay and keep the links; the netlink filter is left in place.
    pub fn keep(mut self) {
        if let Some((xdp, tc)) = self.links.take() {
            drop(xdp.link);
            tc.keep();
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let Some((xdp, tc)) = self.links.take() else {
            return;
        };
        if self.started {
            drop(xdp.link);
            tc.keep();
        } else {
            xdp.undo();
            tc.undo();
        }
    }
}

fn remove_pin(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(pin = %path.display(), "removing the pinned link: {e}"),
    }
}

/// Opens the link pinned at `path`, if there is one.
fn open_pin(path: &Path) -> Result<Option<FdLink>> {
    match PinnedLink::from_pin(path) {
        Ok(p) => Ok(Some(FdLink::from(p))),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AttachError::OpenPin {
            path: path.into(),
            source: Box::new(source),
        }),
    }
}

/// Which program runs in which XDP mode on an interface (rtnetlink's
/// `IFLA_XDP`): program ids, 0 for none.
#[derive(Clone, Copy, Debug, Default)]
struct XdpState {
    driver: u32,
    skb: u32,
    hardware: u32,
}

impl XdpState {
    /// The mode program `prog` runs in on the interface, if it does.
    fn mode_of(&self, prog: u32) -> Option<XdpMode> {
        if prog == 0 {
            None
        } else if self.driver == prog {
            Some(XdpMode::Driver)
        } else if self.skb == prog {
            Some(XdpMode::Skb)
        } else if self.hardware == prog {
            Some(XdpMode::Hardware)
        } else {
            None
        }
    }
}

async fn xdp_state(nl: &rtnetlink::Handle, iface: &str, ifindex: u32) -> Result<XdpState> {
    use futures::TryStreamExt as _;
    use netlink_packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
    let err = |source| AttachError::XdpState {
        iface: iface.into(),
        source: Box::new(source),
    };
    let mut st = XdpState::default();
    let mut links = nl.link().get().match_index(ifindex).execute();
    while let Some(m) = links.try_next().await.map_err(err)? {
        for a in &m.attributes {
            let LinkAttribute::Xdp(xdp) = a else { continue };
            let mut single = None;
            let mut prog = 0;
            for x in xdp {
                match x {
                    LinkXdp::Attached(a) => single = Some(*a),
                    LinkXdp::ProgId(p) => prog = *p,
                    LinkXdp::DrvProgId(p) => st.driver = *p,
                    LinkXdp::SkbProgId(p) => st.skb = *p,
                    LinkXdp::HwProgId(p) => st.hardware = *p,
                    _ => {}
                }
            }
            // One program: its mode is in IFLA_XDP_ATTACHED and its id in
            // IFLA_XDP_PROG_ID; several (one per mode): the per-mode ids.
            match single {
                Some(XdpAttached::Driver) => st.driver = prog,
                Some(XdpAttached::SocketBuffer) => st.skb = prog,
                Some(XdpAttached::Hardware) => st.hardware = prog,
                _ => {}
            }
        }
    }
    Ok(st)
}

fn mode_name(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Driver => "native",
        XdpMode::Skb => "skb",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
}

/// Whether a link running in `found` serves an agent asking for `want`.
fn mode_fits(found: XdpMode, want: XdpMode) -> bool {
    want == XdpMode::Default || found == want
}

/// Attaches (or takes over) XDP and the tc program on `iface`.
pub async fn attach(
    ebpf: &mut Ebpf,
    nl: &rtnetlink::Handle,
    pin_dir: &Path,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<Attached> {
    let (xdp, how) = attach_xdp(ebpf, nl, pin_dir, iface, ifindex, mode).await?;
    let (tc, clsact_created) = match attach_tc(ebpf, pin_dir, iface) {
        Ok(t) => t,
        Err(e) => {
            xdp.undo();
            return Err(e);
        }
    };
    Ok(Attached {
        iface: iface.into(),
        ifindex,
        how,
        clsact_created,
        links: Some((xdp, tc)),
        started: false,
    })
}

async fn attach_xdp(
    ebpf: &mut Ebpf,
    nl: &rtnetlink::Handle,
    pin_dir: &Path,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(Held, How)> {
    let path = pin_dir.join(format!("{XDP_LINK_PREFIX}{iface}"));
    if let Some(old) = open_pin(&path)? {
        let info = old.info().map_err(|source| AttachError::Link {
            iface: iface.into(),
            what: "reading the pinned XDP link",
            source: Box::new(source),
        })?;
        match info.link_type() {
            Ok(LinkType::Xdp) => {}
            other => {
                return Err(AttachError::NotOurs {
                    path,
                    want: "XDP",
                    found: format!("{other:?}"),
                })
            }
        }
        let state = xdp_state(nl, iface, ifindex).await?;
        match state.mode_of(info.program_id()) {
            Some(found) if mode_fits(found, mode) => {
                let old_prog = info.program_id();
                let link = XdpLink::try_from(old).map_err(|source| AttachError::Link {
                    iface: iface.into(),
                    what: "taking the pinned XDP link",
                    source: Box::new(source),
                })?;
                let prog = dataplane::xdp(ebpf)?;
                let replace = |source| AttachError::Replace {
                    iface: iface.into(),
                    path: path.clone(),
                    source: Box::new(source),
                };
                let id = prog.attach_to_link(link).map_err(replace)?;
                let new_prog = prog.info().map(|i| i.id()).unwrap_or_default();
                let link = prog.take_link(id).map_err(replace)?;
                let link = FdLink::try_from(link).map_err(|source| AttachError::Link {
                    iface: iface.into(),
                    what: "holding the XDP link",
                    source: Box::new(source),
                })?;
                tracing::info!(
                    %iface,
                    mode = mode_name(found),
                    old_program = old_prog,
                    new_program = new_prog,
                    "adopted the XDP link of a previous agent on {iface}, program replaced"
                );
                return Ok((
                    Held {
                        link,
                        path,
                        adopted: true,
                    },
                    How::Adopted,
                ));
            }
            Some(found) => {
                tracing::warn!(
                    %iface,
                    "the XDP link a previous agent pinned on {iface} runs in {} mode, {} mode is asked for: detaching it and attaching anew (frames reach the kernel unbalanced for that instant)",
                    mode_name(found),
                    mode_name(mode)
                );
            }
            None => {
                tracing::warn!(
                    %iface,
                    pin = %path.display(),
                    "a pinned XDP link is no longer attached to {iface} (interface gone or recreated, or XDP detached by hand): removed, attaching anew"
                );
            }
        }
        drop(old);
        std::fs::remove_file(&path).map_err(|source| AttachError::Unpin {
            path: path.clone(),
            source: Box::new(source),
        })?;
    }
    let prog = dataplane::xdp(ebpf)?;
    let id = prog
        .attach(iface, mode)
        .map_err(|e| dataplane::attach_error(iface, mode, e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| dataplane::attach_error(iface, mode, e))?;
    let link = FdLink::try_from(link).map_err(|source| AttachError::Link {
        iface: iface.into(),
        what:
            "XDP attached without a bpf_link (kernel before 5.9?), which cannot outlive the agent",
        source: Box::new(source),
    })?;
    Ok((Held::pin(link, path)?, How::Fresh))
}

/// Whether the kernel attaches tc programs as tcx links (6.6 and later).
fn tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn attach_tc(ebpf: &mut Ebpf, pin_dir: &Path, iface: &str) -> Result<(Tc, bool)> {
    let err = |source: ProgramError| AttachError::AttachTc {
        iface: iface.into(),
        source: Box::new(source),
    };
    if !tcx() {
        return attach_tc_netlink(ebpf, iface);
    }
    let path = pin_dir.join(format!("{TC_LINK_PREFIX}{iface}"));
    let prog = dataplane::tc_program(ebpf)?;
    if let Some(old) = open_pin(&path)? {
        let info = old.info().map_err(|source| AttachError::Link {
            iface: iface.into(),
            what: "reading the pinned tcx link",
            source: Box::new(source),
        })?;
        let on_iface = matches!(info.link_type(), Ok(LinkType::Tcx))
            && SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
                .map(|(_, progs)| progs.iter().any(|p| p.id() == info.program_id()))
                .unwrap_or(false);
        if on_iface {
            let link = SchedClassifierLink::try_from(old).map_err(|source| AttachError::Link {
                iface: iface.into(),
                what: "taking the pinned tcx link",
                source: Box::new(source),
            })?;
            let id = prog.attach_to_link(link).map_err(err)?;
            let link = FdLink::try_from(prog.take_link(id).map_err(err)?).map_err(|source| {
                AttachError::Link {
                    iface: iface.into(),
                    what: "holding the tcx link",
                    source: Box::new(source),
                }
            })?;
            tracing::debug!(%iface, "tcx link of a previous agent taken over, program replaced");
            return Ok((
                Tc::Link(Held {
                    link,
                    path,
                    adopted: true,
                }),
                false,
            ));
        }
        tracing::warn!(%iface, pin = %path.display(), "a pinned tc link is no longer attached to {iface}: removed, attaching anew");
        drop(old);
        std::fs::remove_file(&path).map_err(|source| AttachError::Unpin {
            path: path.clone(),
            source: Box::new(source),
        })?;
    }
    let id = prog
        .attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(err)?;
    let link =
        FdLink::try_from(prog.take_link(id).map_err(err)?).map_err(|source| AttachError::Link {
            iface: iface.into(),
            what: "holding the tcx link",
            source: Box::new(source),
        })?;
    Ok((Tc::Link(Held::pin(link, path)?), false))
}

/// Kernels before 6.6: a cls_bpf filter at [`TC_PRIORITY`] / [`TC_HANDLE`]
/// in a clsact qdisc (added when the interface has none: `true`). A filter
/// a previous agent left there is replaced in place.
fn attach_tc_netlink(ebpf: &mut Ebpf, iface: &str) -> Result<(Tc, bool)> {
    let err = |source: ProgramError| AttachError::AttachTc {
        iface: iface.into(),
        source: Box::new(source),
    };
    let mut created = false;
    match aya::programs::tc::qdisc_add_clsact(iface) {
        Ok(()) => created = true,
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(err(e.into())),
    }
    let prog = dataplane::tc_program(ebpf)?;
    let options = || {
        TcAttachOptions::Netlink(NlOptions {
            priority: TC_PRIORITY,
            handle: TC_HANDLE,
            classid: None,
        })
    };
    let mut adopted = false;
    let id = match prog.attach_with_options(iface, TcAttachType::Ingress, options()) {
        Ok(id) => id,
        Err(ProgramError::TcError(TcError::NetlinkError(e)))
            if e.raw_os_error() == Some(libc::EEXIST) =>
        {
            let old = SchedClassifierLink::attached(
                iface,
                TcAttachType::Ingress,
                TC_PRIORITY,
                TC_HANDLE,
                None,
            )
            .map_err(|e| err(TcError::IoError(e).into()))?;
            let id = prog.attach_to_link(old).map_err(err)?;
            tracing::debug!(%iface, "tc filter of a previous agent replaced in place");
            adopted = true;
            id
        }
        Err(e) => return Err(err(e)),
    };
    let link = prog.take_link(id).map_err(err)?;
    Ok((Tc::Netlink { link, adopted }, created))
}

/// Removes the pinned links in `pin_dir` of interfaces not in `served`
/// (an earlier agent served more interfaces): what they held is detached.
pub fn remove_unserved(pin_dir: &Path, served: &[String]) {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(iface) = name
            .strip_prefix(XDP_LINK_PREFIX)
            .or_else(|| name.strip_prefix(TC_LINK_PREFIX))
        else {
            continue;
        };
        if served.iter().any(|s| s == iface) {
            continue;
        }
        tracing::warn!(%iface, pin = %e.path().display(), "a previous agent's link on {iface}, which this agent does not serve: removed (detached)");
        remove_pin(&e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_mode_of_a_program() {
        let st = XdpState {
            driver: 7,
            skb: 9,
            hardware: 0,
        };
        assert_eq!(st.mode_of(7), Some(XdpMode::Driver));
        assert_eq!(st.mode_of(9), Some(XdpMode::Skb));
        assert_eq!(st.mode_of(8), None);
        // No program is id 0: nothing attached never matches.
        assert_eq!(XdpState::default().mode_of(0), None);
    }

    #[test]
    fn a_link_fits_the_mode_asked_for() {
        assert!(mode_fits(XdpMode::Driver, XdpMode::Driver));
        assert!(mode_fits(XdpMode::Skb, XdpMode::Default));
        assert!(!mode_fits(XdpMode::Skb, XdpMode::Driver));
        assert!(!mode_fits(XdpMode::Driver, XdpMode::Skb));
    }

    #[test]
    fn pins_of_unserved_interfaces_are_removed() {
        let dir = std::env::temp_dir().join(format!("lb-attach-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "link_xdp_eth0",
            "link_tc_eth0",
            "link_xdp_eth1",
            "link_tc_eth1",
            "LB_REALS",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        remove_unserved(&dir, &["eth0".to_string()]);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["LB_REALS", "link_tc_eth0", "link_xdp_eth0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
