//! The raw `bpf(2)` commands aya 0.14 does not expose: creating an ARRAY map
//! with a name and flags of our choosing, batch updates and lookups, reads
//! and writes through mappings of `BPF_F_MMAPABLE` arrays (a table is copied
//! into the cell pool that way: 100k-rule tables have ~10^5 cells, and
//! `BPF_MAP_UPDATE_BATCH`, which copies them one by one, took 30 ms for one
//! that a plain copy writes in 4–5 ms), and waiting for an RCU grace period.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// `union bpf_attr`, sized generously; unused fields must be zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr of the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            size_of::<Attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates a `BPF_MAP_TYPE_ARRAY` with u32 keys.
pub(crate) fn create_array(
    name: &str,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_MAP_TYPE_ARRAY);
    attr.put_u32(4, 4);
    attr.put_u32(8, value_size);
    attr.put_u32(12, max_entries);
    attr.put_u32(16, flags);
    // map_name at offset 28 (after inner_map_fd and numa_node), 15 chars + NUL.
    let bytes: Vec<u8> = name
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .take(15)
        .collect();
    attr.0[28..28 + bytes.len()].copy_from_slice(&bytes);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `values[i]` at key `keys[i]` with `BPF_MAP_UPDATE_BATCH`. For a
/// map-in-map the values are map fds, and the kernel waits for one RCU grace
/// period per batch instead of one per element.
pub(crate) fn update_batch<V>(map: BorrowedFd<'_>, keys: &[u32], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0usize;
    while done < values.len() {
        let mut attr = Attr::new();
        let mut count = (values.len() - done) as u32;
        // batch: in_batch 0, out_batch 8, keys 16, values 24, count 32, map_fd 36, elem_flags 40, flags 48
        attr.put_u64(16, keys[done..].as_ptr() as u64);
        attr.put_u64(24, values[done..].as_ptr() as u64);
        attr.put_u32(32, count);
        attr.put_u32(36, map.as_raw_fd() as u32);
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        count = u32::from_ne_bytes([attr.0[32], attr.0[33], attr.0[34], attr.0[35]]);
        match result {
            Ok(_) => done += count as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) && count > 0 => done += count as usize,
            Err(e) => return Err(e),
        }
        if count == 0 && done < values.len() {
            return Err(io::Error::other("BPF_MAP_UPDATE_BATCH made no progress"));
        }
    }
    Ok(())
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
/// Deletes `key` from a map (for ARRAY_OF_MAPS: empties the slot).
pub(crate) fn delete(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, map.as_raw_fd() as u32);
    attr.put_u64(8, (&raw const key) as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_F_REPLACE: u32 = 1 << 2;

/// Looks up `key` in a map whose values are u32 (for PROG_ARRAY and
/// ARRAY_OF_MAPS the kernel answers with the program / map id); `None` when empty.
pub(crate) fn lookup_u32(map: BorrowedFd<'_>, key: u32) -> io::Result<Option<u32>> {
    lookup(map, key, 0u32)
}

/// Opens a pinned bpffs object (map, program or link).
pub(crate) fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = Attr::new();
    attr.put_u64(0, path.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Atomically replaces the program of a bpf_link; with `old`, only if the link
/// still runs that program (`BPF_F_REPLACE`).
pub(crate) fn link_update(
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, link.as_raw_fd() as u32);
    attr.put_u32(4, new.as_raw_fd() as u32);
    if let Some(old) = old {
        attr.put_u32(8, BPF_F_REPLACE);
        attr.put_u32(12, old.as_raw_fd() as u32);
    }
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_PIN: libc::c_long = 6;

/// Pins a bpf object (map, program, link) at `path` on a bpffs.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = Attr::new();
    attr.put_u64(0, path.as_ptr() as u64);
    attr.put_u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Runs `frame` once through program `prog` (`BPF_PROG_TEST_RUN`); its return value.
pub(crate) fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<u32> {
    let mut attr = Attr::new();
    // test: prog_fd 0, retval 4, data_size_in 8, data_size_out 12, data_in 16,
    // data_out 24, repeat 32, duration 36
    attr.put_u32(0, prog.as_raw_fd() as u32);
    attr.put_u32(8, frame.len() as u32);
    attr.put_u64(16, frame.as_ptr() as u64);
    attr.put_u32(32, 1);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(u32::from_ne_bytes([
        attr.0[4], attr.0[5], attr.0[6], attr.0[7],
    ]))
}

const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Looks up `key` in a map whose values are `V`; `None` when absent.
pub(crate) fn lookup<V: Copy>(map: BorrowedFd<'_>, key: u32, zero: V) -> io::Result<Option<V>> {
    let mut value = zero;
    let mut attr = Attr::new();
    attr.put_u32(0, map.as_raw_fd() as u32);
    attr.put_u64(8, (&raw const key) as u64);
    attr.put_u64(16, (&raw mut value) as u64);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A shared mapping of the pages of a `BPF_F_MMAPABLE` ARRAY that hold a
/// range of its bytes (an array's values start at byte 0 of its mapping),
/// unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    /// Map byte where the mapping starts (a page boundary).
    offset: usize,
}

impl Mapping {
    /// Maps the pages holding map bytes `bytes`, writable or read only,
    /// faulting them in up front when `populate` (an empty range: EINVAL).
    fn new(
        map: BorrowedFd<'_>,
        bytes: std::ops::Range<usize>,
        writable: bool,
        populate: bool,
    ) -> io::Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let offset = bytes.start / page * page;
        let len = bytes.end.div_ceil(page) * page - offset;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of whole pages of the map; the kernel
        // checks offset, length and write access against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                map.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len, offset })
    }

    /// Where map byte `byte` is; it must lie in the mapped range.
    fn at(&self, byte: usize) -> *mut u8 {
        assert!(
            (self.offset..self.offset + self.len).contains(&byte),
            "map byte {byte} is not mapped"
        );
        // SAFETY: in bounds of the mapping, checked just above.
        unsafe { self.ptr.cast::<u8>().add(byte - self.offset) }
    }

    /// Where map bytes `bytes` (not empty) start; all of them must be mapped
    /// (both ends are checked, so is everything between).
    fn span(&self, bytes: std::ops::Range<usize>) -> *mut u8 {
        self.at(bytes.end - 1);
        self.at(bytes.start)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no pointer into it
        // outlives the `Mapping` (`at`'s results are used while it lives).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Every value of a `BPF_F_MMAPABLE` ARRAY of `n` u32 values, read through a
/// read-only mapping (no per-element syscall work; array elements are 8-byte
/// aligned, so value `i` is at byte `8 * i`).
pub(crate) fn read_mmapable_u32(map: BorrowedFd<'_>, n: u32) -> io::Result<Vec<u32>> {
    const STRIDE: usize = 8;
    let mapping = Mapping::new(map, 0..n as usize * STRIDE, false, false)?;
    Ok((0..n as usize)
        // SAFETY: `at` checked the byte is mapped, and the 4 bytes from it lie
        // within the same 8-byte value; the kernel may write concurrently, so
        // each value is read volatile.
        .map(|i| unsafe { std::ptr::read_volatile(mapping.at(i * STRIDE).cast::<u32>()) })
        .collect())
}

/// Elements `indices` of a `BPF_F_MMAPABLE` ARRAY whose elements are
/// `size_of::<V>()` bytes (a multiple of 8), read through one read-only
/// mapping of the pages from the lowest to the highest (faulted in as read).
pub(crate) fn read_mmapable<V: Copy>(map: BorrowedFd<'_>, indices: &[u32]) -> io::Result<Vec<V>> {
    let stride = std::mem::size_of::<V>();
    assert!(
        stride.is_multiple_of(8),
        "array elements of {stride} bytes are padded"
    );
    let (Some(&lo), Some(&hi)) = (indices.iter().min(), indices.iter().max()) else {
        return Ok(Vec::new());
    };
    let mapping = Mapping::new(
        map,
        lo as usize * stride..(hi as usize + 1) * stride,
        false,
        false,
    )?;
    Ok(indices
        .iter()
        .map(|&i| {
            let start = i as usize * stride;
            let at = mapping.span(start..start + stride);
            // SAFETY: the element is mapped (`span` checks); the kernel may
            // write concurrently, so it is read volatile.
            unsafe { std::ptr::read_volatile(at.cast::<V>()) }
        })
        .collect())
}

/// Copies each `(first, values)` of `regions` into elements
/// `first..first + values.len()` of a `BPF_F_MMAPABLE` ARRAY whose elements
/// are `size_of::<V>()` bytes (a multiple of 8, so they lie back to back),
/// through one shared mapping of the pages they span (one, not one per
/// region: staging 10k tenant tables is 10k regions). The caller must own
/// those elements: no program may read them until something published after
/// this call points at them (a release fence orders the copies before that
/// publication).
pub(crate) fn write_mmapable<V: Copy>(
    map: BorrowedFd<'_>,
    regions: &[(u32, &[V])],
) -> io::Result<()> {
    let stride = std::mem::size_of::<V>();
    assert!(
        stride.is_multiple_of(8),
        "array elements of {stride} bytes are padded"
    );
    let spans: Vec<(std::ops::Range<usize>, &[V])> = regions
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|&(first, values)| {
            let start = first as usize * stride;
            (start..start + std::mem::size_of_val(values), values)
        })
        .collect();
    let (Some(lo), Some(hi)) = (
        spans.iter().map(|(r, _)| r.start).min(),
        spans.iter().map(|(r, _)| r.end).max(),
    ) else {
        return Ok(());
    };
    let data: usize = spans.iter().map(|(r, _)| r.len()).sum();
    // Fault the pages in up front unless the regions are scattered thinly.
    let mapping = Mapping::new(map, lo..hi, true, hi - lo <= 2 * data)?;
    for (bytes, values) in &spans {
        let dst = mapping.span(bytes.clone());
        // SAFETY: the destination lies inside the mapping, which no Rust
        // reference aliases; `V: Copy`.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), dst, bytes.len());
        }
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Waits for an RCU grace period: every XDP program run that started before
/// the call has finished when it returns. The kernel does that on each update
/// of an ARRAY_OF_MAPS (`maybe_wait_bpf_programs`), so this updates a private
/// one-slot map-in-map.
pub(crate) fn synchronize_rcu() -> io::Result<()> {
    let inner = create_array("fg_grace_in", 4, 1, 0)?;
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    attr.put_u32(4, 4);
    attr.put_u32(8, 4);
    attr.put_u32(12, 1);
    attr.put_u32(20, inner.as_raw_fd() as u32);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new, owned file descriptor.
    let outer = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let raw = inner.as_raw_fd() as u32;
    use std::os::fd::AsFd;
    update_batch(outer.as_fd(), &[0], &[raw])
}
