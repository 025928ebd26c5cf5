//! Attaching the program to an interface (native, generic fallback) and
//! handing the attachment over to bpffs.

use std::{fmt, path::Path};

use aya::programs::{ProgramError, XdpMode, xdp::XdpLinkId};

use crate::{Error, PinnedAttachment, Program, error::os_error};

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native (driver) mode; generic mode only if the driver lacks native XDP.
    #[default]
    Auto,
    /// Native (driver) mode only; fail if unsupported.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

impl Program {
    /// Attaches the program to `iface` in the current network namespace.
    ///
    /// The returned [`Attachment`] detaches when dropped, unless
    /// [`Attachment::pin`] hands it over to bpffs.
    pub fn attach(self, iface: &str, mode: AttachMode) -> Result<Attachment, Error> {
        Attachment::new(self, iface, mode)
    }
}

/// The program attached to one interface. Dropping it detaches the program,
/// unless it was handed over to bpffs with [`Attachment::pin`].
pub struct Attachment {
    program: Program,
    iface: String,
    mode: AttachMode,
    link: XdpLinkId,
    fallback: Option<String>,
}

impl Attachment {
    fn new(mut program: Program, iface: &str, mode: AttachMode) -> Result<Self, Error> {
        if nix_ifindex(iface).is_none() {
            return Err(Error::NoSuchInterface(iface.to_owned()));
        }
        let xdp = program.xdp_mut()?;
        let (link, mode, fallback) = match mode {
            AttachMode::Native => (
                attach(xdp, iface, XdpMode::Driver)?,
                AttachMode::Native,
                None,
            ),
            AttachMode::Generic => (attach(xdp, iface, XdpMode::Skb)?, AttachMode::Generic, None),
            AttachMode::Auto => match xdp.attach(iface, XdpMode::Driver) {
                Ok(link) => (link, AttachMode::Native, None),
                Err(err) if native_unsupported(&err) => {
                    let reason = format!("native XDP unsupported on {iface} ({err})");
                    log::warn!("{reason}; falling back to generic mode");
                    (
                        attach(xdp, iface, XdpMode::Skb)?,
                        AttachMode::Generic,
                        Some(reason),
                    )
                }
                Err(err) => return Err(attach_error(iface, err)),
            },
        };
        Ok(Attachment {
            program,
            iface: iface.to_owned(),
            mode,
            link,
            fallback,
        })
    }

    /// The interface this is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The mode actually in use: [`AttachMode::Native`] or [`AttachMode::Generic`].
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Why native mode was not used, when [`AttachMode::Auto`] fell back to generic.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The attached program (counters, test runs, configuration).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Mutable access to the attached program (e.g. to change its configuration).
    pub fn program_mut(&mut self) -> &mut Program {
        &mut self.program
    }

    /// Pins the link and maps under `root/<iface>/` so the program stays attached
    /// after this process exits. On failure nothing stays pinned and the program
    /// is detached.
    pub fn pin(mut self, root: &Path) -> Result<PinnedAttachment, Error> {
        let xdp = self.program.xdp_mut()?;
        let link = xdp
            .take_link(self.link)
            .map_err(|e| Error::kernel("take the XDP link", e))?;
        PinnedAttachment::create(root, &self.iface, &mut self.program, link)
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .finish()
    }
}

fn attach(xdp: &mut aya::programs::Xdp, iface: &str, mode: XdpMode) -> Result<XdpLinkId, Error> {
    xdp.attach(iface, mode)
        .map_err(|err| attach_error(iface, err))
}

fn attach_error(iface: &str, err: ProgramError) -> Error {
    match err {
        ProgramError::UnknownInterface { name } => Error::NoSuchInterface(name),
        err => match os_error(&err) {
            Some(libc::EOPNOTSUPP) => Error::Unsupported {
                feature: "XDP in this mode on this interface",
                source: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            },
            Some(libc::EBUSY | libc::EEXIST) => Error::InvalidArgument(format!(
                "{iface} already has another XDP program attached; remove it first"
            )),
            _ => Error::kernel("attach the XDP program", err),
        },
    }
}

fn native_unsupported(err: &ProgramError) -> bool {
    matches!(os_error(err), Some(libc::EOPNOTSUPP | libc::EINVAL))
}

/// `if_nametoindex`, `None` when there is no such interface.
pub(crate) fn nix_ifindex(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
