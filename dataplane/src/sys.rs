//! The `bpf(2)` commands aya 0.14 does not expose, each building its
//! attribute with aya-obj's generated `union bpf_attr` (the version aya itself
//! uses): batch updates (`BPF_MAP_UPDATE_BATCH`), the lookup of a PROG_ARRAY
//! slot (the kernel answers with the program id; aya's `ProgramArray` has no
//! `get`), and the creation of an ARRAY_OF_MAPS around an inner map (aya
//! creates those only while loading an object). Besides, reads and writes
//! through mappings of `BPF_F_MMAPABLE` arrays (a table is copied into the
//! cell pool that way: 100k-rule tables have ~10^5 cells, and
//! `BPF_MAP_UPDATE_BATCH`, which copies them one by one, took 30 ms for one
//! that a plain copy writes in 4–5 ms), and waiting for an RCU grace period.
//! Everything aya has (map creation, pins, element lookups and updates, test
//! runs, link updates) goes through aya.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya::maps::{ArrayOfMaps, Map, MapData};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_map_type};

/// A zeroed `bpf_attr`: the kernel requires every field a command does not use to be zero.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is a C union of integers and arrays of integers, for
    // which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr of the size we pass,
    // and every pointer stored in it lives until the call returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            (attr as *mut bpf_attr).cast::<libc::c_void>(),
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates a `BPF_MAP_TYPE_ARRAY` with u32 keys, named `name` (at most 15
/// characters of it are kept), through aya.
pub(crate) fn create_array(
    name: &str,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<MapData, aya::maps::MapError> {
    let spec = aya_obj::Map::new_from_params(
        bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        size_of::<u32>() as u32,
        value_size,
        max_entries,
        flags,
    );
    MapData::create(spec, name, None)
}

/// Creates a `BPF_MAP_TYPE_HASH` named `name` (at most 15 characters of it
/// are kept), through aya.
pub(crate) fn create_hash(
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<MapData, aya::maps::MapError> {
    let spec = aya_obj::Map::new_from_params(
        bpf_map_type::BPF_MAP_TYPE_HASH as u32,
        key_size,
        value_size,
        max_entries,
        flags,
    );
    MapData::create(spec, name, None)
}

/// Writes `values[i]` at key `keys[i]` with `BPF_MAP_UPDATE_BATCH` (aya has
/// no batch operations): one syscall, where aya would make one per key.
pub(crate) fn update_batch<K, V>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0usize;
    while done < values.len() {
        let mut attr = zeroed_attr();
        attr.batch.keys = keys[done..].as_ptr() as u64;
        attr.batch.values = values[done..].as_ptr() as u64;
        attr.batch.count = (values.len() - done) as u32;
        attr.batch.map_fd = map.as_raw_fd() as u32;
        let result = bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr);
        // The kernel reports how many elements it wrote, also on failure.
        // SAFETY: reading the member the kernel wrote back.
        let count = unsafe { attr.batch.count };
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

/// Writes `value` at `key` with `BPF_MAP_UPDATE_ELEM` and `flags`
/// (`BPF_NOEXIST`, …; batch updates accept none of these).
pub(crate) fn update_elem<K, V>(
    map: BorrowedFd<'_>,
    key: &K,
    value: &V,
    flags: u64,
) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = (key as *const K) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = (value as *const V) as u64;
    attr.__bindgen_anon_2.flags = flags;
    bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Deletes `keys` with `BPF_MAP_DELETE_BATCH`: one syscall. Every key must
/// be there (the kernel stops at the first missing one: `ENOENT`).
pub(crate) fn delete_batch<K>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    let mut done = 0usize;
    while done < keys.len() {
        let mut attr = zeroed_attr();
        attr.batch.keys = keys[done..].as_ptr() as u64;
        attr.batch.count = (keys.len() - done) as u32;
        attr.batch.map_fd = map.as_raw_fd() as u32;
        let result = bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr);
        // SAFETY: reading the member the kernel wrote back.
        let count = unsafe { attr.batch.count };
        match result {
            Ok(_) => done += count as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) && count > 0 => done += count as usize,
            Err(e) => return Err(e),
        }
        if count == 0 && done < keys.len() {
            return Err(io::Error::other("BPF_MAP_DELETE_BATCH made no progress"));
        }
    }
    Ok(())
}

/// Every `(key, value)` of a hash map, read with `BPF_MAP_LOOKUP_BATCH`: a
/// few syscalls for the whole map (`chunk` elements each), where iterating
/// with aya costs two per element.
pub(crate) fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    chunk: usize,
) -> io::Result<Vec<(K, V)>> {
    let mut chunk = chunk.max(1);
    let mut out = Vec::new();
    // The hash map's batch token is a bucket index (u32); room for more.
    let mut token = [0u64; 2];
    let mut first = true;
    loop {
        // SAFETY: `Pod` types are plain integers: all-zero bytes are valid.
        let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; chunk];
        // SAFETY: as above.
        let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; chunk];
        let mut next = [0u64; 2];
        let mut attr = zeroed_attr();
        attr.batch.in_batch = if first { 0 } else { token.as_ptr() as u64 };
        attr.batch.out_batch = next.as_mut_ptr() as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = chunk as u32;
        attr.batch.map_fd = map.as_raw_fd() as u32;
        let result = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
        // SAFETY: reading the member the kernel wrote back.
        let count = unsafe { attr.batch.count } as usize;
        match result {
            Ok(_) => {}
            // The end of the map (the last elements may come with it).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                out.extend(keys.into_iter().zip(values).take(count));
                return Ok(out);
            }
            // One bucket holds more elements than the buffer: a larger one.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && count == 0 => {
                chunk *= 2;
                continue;
            }
            Err(e) => return Err(e),
        }
        out.extend(keys.into_iter().zip(values).take(count));
        token = next;
        first = false;
    }
}

/// The value of `key`, with `BPF_MAP_LOOKUP_ELEM` (any key type, unlike
/// aya's typed maps); `None` when there is none.
pub(crate) fn lookup_elem<K, V: aya::Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    // SAFETY: `Pod` types are plain integers: all-zero bytes are valid.
    let mut value: V = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = (key as *const K) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = (&raw mut value) as u64;
    match bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Id of the program in slot `key` of a PROG_ARRAY (from userspace the kernel
/// answers a lookup with the id; aya's `ProgramArray` has no lookup); `None`
/// when the slot is empty.
pub(crate) fn program_array_id(map: BorrowedFd<'_>, key: u32) -> io::Result<Option<u32>> {
    let mut id = 0u32;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = (&raw const key) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = (&raw mut id) as u64;
    match bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a one-slot `BPF_MAP_TYPE_ARRAY_OF_MAPS` whose inner maps look like
/// `inner` (the kernel takes the inner shape from a live map's fd; aya creates
/// map-in-maps only while loading an object).
fn create_array_of_maps(name: &str, inner: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain-integer members of a zeroed union.
    unsafe {
        let create = &mut attr.__bindgen_anon_1;
        create.map_type = bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS as u32;
        create.key_size = 4;
        create.value_size = 4;
        create.max_entries = 1;
        create.inner_map_fd = inner.as_raw_fd() as u32;
        for (dst, src) in create.map_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
    }
    let fd = bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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
/// one-slot map-in-map (through aya).
pub(crate) fn synchronize_rcu() -> io::Result<()> {
    let inner = create_array("fg_grace_in", 4, 1, 0).map_err(io::Error::other)?;
    let outer = create_array_of_maps("fg_grace", inner.fd().as_fd())?;
    let outer = MapData::from_fd(outer).map_err(io::Error::other)?;
    let mut outer: ArrayOfMaps<MapData, MapData> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(outer)).map_err(io::Error::other)?;
    outer.set(0, &inner, 0).map_err(io::Error::other)
}
