//! The XDP packet parser (`ebpf/src/parse.rs`), compiled for the host as
//! `fluxgate_dataplane::frame::header_of`: arbitrary frame bytes must never
//! make it panic or read past the frame, and when it yields a header, the
//! frame rebuilt from that header (`FrameSpec::from_header(..).build()`)
//! parses back to the same header: the classification key round-trips
//! through the wire.
//!
//! The parser reads through raw pointers, as the kernel's verifier-checked
//! code does. The targets are built without AddressSanitizer (the Debian
//! toolchain ships no ASan runtime), so the frame is placed to end exactly
//! where an inaccessible guard page begins: a read one byte past the frame
//! faults (SIGSEGV), which libFuzzer reports as a crash.
#![no_main]

use fluxgate_dataplane::frame::{FrameSpec, header_of};
use libfuzzer_sys::fuzz_target;

/// Most frame bytes tried (a jumbo frame; more is cut off).
const MAX_FRAME: usize = 9216;

/// A mapping of readable pages followed by one `PROT_NONE` page.
struct Guarded {
    base: *mut libc::c_void,
    len: usize,
    page: usize,
}

impl Guarded {
    fn new() -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let readable = MAX_FRAME.div_ceil(page) * page;
        let len = readable + page;
        // SAFETY: a fresh anonymous private mapping; checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(base != libc::MAP_FAILED, "mmap failed");
        // SAFETY: the last page lies inside the mapping just made.
        let rc = unsafe {
            libc::mprotect(
                base.cast::<u8>().add(readable).cast(),
                page,
                libc::PROT_NONE,
            )
        };
        assert_eq!(rc, 0, "mprotect failed");
        Guarded { base, len, page }
    }

    /// `data` copied so that its last byte is the last readable byte.
    fn place(&mut self, data: &[u8]) -> &[u8] {
        let readable = self.len - self.page;
        let at = readable - data.len();
        // SAFETY: `at + data.len() == readable`, all inside the readable
        // pages of the mapping, which nothing else references.
        unsafe {
            let dst = self.base.cast::<u8>().add(at);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            std::slice::from_raw_parts(dst, data.len())
        }
    }
}

thread_local! {
    static GUARDED: std::cell::RefCell<Guarded> = std::cell::RefCell::new(Guarded::new());
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_FRAME)];
    let header = GUARDED.with(|g| {
        let mut g = g.borrow_mut();
        let frame = g.place(data);
        header_of(frame)
    });
    let Ok(Some(header)) = header else {
        return;
    };
    let spec = FrameSpec::from_header(&header)
        .unwrap_or_else(|| panic!("the parser yielded a header no frame carries: {header}"));
    let rebuilt = spec.build();
    let again = GUARDED.with(|g| header_of(g.borrow_mut().place(&rebuilt)));
    assert_eq!(
        again,
        Ok(Some(header.clone())),
        "the frame rebuilt from {header} parses differently"
    );
});
