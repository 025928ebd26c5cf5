//! The two raw `bpf(2)` commands aya 0.14 does not expose: creating an inner
//! ARRAY map with a name and flags of our choosing, and filling it with one
//! `BPF_MAP_UPDATE_BATCH` instead of one syscall per cell (100k-rule tables
//! have ~10^5 cells; per-element updates alone would blow the staging budget).

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

/// Writes `values[i]` at index `i` for every `i`, in as few syscalls as the
/// kernel allows (it may process a batch partially; we continue where it stopped).
pub(crate) fn update_all<V>(map: BorrowedFd<'_>, values: &[V]) -> io::Result<()> {
    let keys: Vec<u32> = (0..values.len() as u32).collect();
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
