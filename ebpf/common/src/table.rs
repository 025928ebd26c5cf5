//! The classification table: the layout shared by the compiler (userspace),
//! the userspace classifier and the XDP program.
//!
//! (Over 1,200 lines on purpose: it is the kernel/user ABI of the table — cell
//! layout, the walk both sides run, and the measurements that chose them —
//! and splitting it would put the two halves of one contract in two places.)
//!
//! # Why a decision tree in array cells
//!
//! Measured on this kernel (../shared/PERF-FACTS.md): a hash lookup costs ≈ 25 ns
//! hot and 150–420 ns cold, so tuple-space search pays that *per tuple* (16 tuples
//! ≈ 450 ns); an LPM trie grows from 32 to 99 ns between 10 and 100k prefixes; bit
//! vectors cost 26 ns at 1k rules but 129 ns at 10k (linear in rules / 64). A
//! dependent ARRAY lookup costs ≈ 1.5 ns hot, and its cost does not depend on
//! the table size. So a packet walks a decision tree (HiCuts/HyperCuts-style
//! equal-size bit cuts on one key word per node) laid out in one array of cells, then
//! checks at most [`LEAF_MAX`] candidate rules in the leaf it reaches. The walk is
//! at most [`MAX_DEPTH`] array steps whatever the number of rules, the compiler
//! does all the hard work (choosing cuts, pruning covered rules), and tenant
//! dispatch uses the same tree over the destination address, so it stays flat as
//! tenants grow too.
//!
//! # Measured (2026-11-25, `cargo bench --bench classifier`, kernel hot ns, floor 26–28 ns)
//!
//! With one `BPF_F_INNER_MAP` ARRAY per table (before the cell pool below):
//!
//! | | acl 10 | acl 1k | acl 10k | 10 tenants | 10k tenants |
//! |---|---|---|---|---|---|
//! | leaf target 8 (default) | 160 | 343 | 430 | 223 | 249 |
//! | leaf target 4 (×3 memory at 1k, see `TreeConfig`) | 151–156 | 294–315 | 360–386 | 224 | 224 |
//! | v3 leaves of residual checks, `bpf_loop` walk (reverted) | 265 | 630 | 716 | 303 | 310 |
//!
//! Where the time went: every lookup on a table was a call (tables were
//! `BPF_F_INNER_MAP` arrays of varying size behind ARRAY_OF_MAPS slots, whose
//! lookups the verifier does not inline: `array_map_gen_lookup` refuses
//! inner maps); a leaf rule is one lookup plus a branch-free 15-word range
//! check, ≈ 100 instructions; a table walks up to [`MAX_TREES`] trees.
//!
//! # Tables as regions of one cell pool (2026-11-25)
//!
//! Every table is now a region `[base, base + cells)` of one fixed-size ARRAY
//! per attachment (`FG_POOL`, no map-in-map, no `BPF_F_INNER_MAP`), so every
//! cell lookup is inlined (a bounds check and an address computation instead
//! of a helper call). A walk adds `base` to each index after checking it
//! against the region header's `cells`, so it cannot leave its table.
//!
//! The experiment that decided it, one bench run, three rounds, the same walk
//! code in two programs of one object (parse + dispatch + global + tenant
//! walks, no tail call), kernel hot ns:
//!
//! | | acl 10 | acl 1k | acl 10k | 10 tenants | 10k tenants |
//! |---|---|---|---|---|---|
//! | one inner map per table | 155–164 | 342–350 | 422–447 | 232–238 | 237–242 |
//! | regions of one pool | 100–101 | 199–208 | 253–265 | 143–145 | 146–148 |
//! | speed-up | 1.55–1.62× | 1.64–1.76× | 1.59–1.77× | 1.62–1.64× | 1.61–1.64× |
//!
//! Measured after the change: `cargo bench --bench classifier` of this
//! branch and of the map-per-table build before it (f97180a), run
//! alternately five times on the same machine (kernel hot ns, median of the
//! five; floor 27–29 ns and parse-and-pass 59–66 ns in every run, unchanged):
//!
//! | | acl 10 | acl 1k | acl 10k | 10 tenants | 10k tenants |
//! |---|---|---|---|---|---|
//! | one inner map per table | 181 (174–185) | 367 (359–389) | 451 (442–492) | 259 (252–269) | 263 (250–276) |
//! | regions of one pool | 124 (118–127) | 226 (218–230) | 278 (271–285) | 169 (163–171) | 170 (162–177) |
//! | speed-up | 1.46× | 1.62× | 1.62× | 1.53× | 1.55× |
//! | hot / floor (median), before → after | 6.4 → 4.3 | 13.1 → 8.1 | 16.1 → 9.9 | 9.3 → 6.0 | 9.4 → 6.1 |
//! | trace ns (distinct packets, one pair of runs) | 231 → 173 | 527 → 391 | 490 → 342 | 352 → 237 | 377 → 349 |
//!
//! Again on top of the tree-partition change (b1c69b3, 2–3 fewer tree steps
//! per packet), two alternating pairs of runs (floor 26–27 ns, parse-and-pass
//! 57–61 ns in both builds): acl 10 178/183 → 123/122 ns, acl 1k 327/310 →
//! 193/193, acl 10k 385/371 → 231/227, 10 tenants 259/244 → 164/168, 10k
//! tenants 252/250 → 172/169 (1.47–1.65×).
//!
//! Above parse-and-pass (≈ 60 ns) the walk itself costs ≈ 1.8× less at 1k
//! and 10k rules. Staging a table is a copy into the (mmapable) pool
//! plus a read of the (mmapable) slot maps; placing it is a 4-byte array
//! write, no RCU grace period (the grace period is paid only when freed cells
//! are reused, see `fluxgate-dataplane`'s `pool.rs`).
//!
//! # Rule cells in check form (2026-11-25)
//!
//! A leaf rule check was a loop over 15 `[lo, hi]` words that LLVM left
//! rolled: ≈ 17 BPF instructions per word, ≈ 260 per rule, and a packet
//! checks 7–10 rules (synthetic ACL 1k–100k). Now the rule cell holds the
//! address words and the interface as `(lo, span)`, the six small fields as
//! lanes of one `u64` compared all at once (SWAR, [`small`]), and the check is
//! unrolled: ≈ 75 instructions. The packet's side ([`CheckKey`]) is packed
//! once per packet by the dispatcher. Kernel hot ns, two runs each, same
//! machine (floor 26–30 ns): acl 10 117–136 → 101–104, acl 1k 200–232 →
//! 152–153, acl 10k 228–263 → 171–176, 10 tenants 163–174 → 143–144, 10k
//! tenants 177–180 → 138–144. The fields an IPv4 check reads come first, in
//! one cache line; the userspace classifier checks IPv4 keys with
//! [`RuleCell::matches_family`] and so touches only that line (10k rules,
//! distinct keys, one core: ≈ 10.5 → 11.2 M packets/s). Its walk also
//! descended all trees one step at a time so their loads overlapped (8.1 →
//! 10.1–10.9 M packets/s; the same key repeated: 14.7 → 18.2), until trees
//! could be skipped (below).
//!
//! # Upper address words only where they can decide (2026-11-26)
//!
//! A rule cell says in [`RuleCell::shape`] whether its check must read
//! address words 1–3 at all ([`RuleCell::HIGH_WORDS`]): not for a rule
//! whose family lane excludes IPv6, nor for one whose upper words are full
//! ranges. The check branches on that bit — a branch on the rule, not on
//! the packet, so the verifier's two paths meet in the same state and are
//! pruned (classifier 264k → 245k instructions verified). IPv4 rules then
//! cost ≈ 40 % fewer instructions and one cache line, for IPv4 *and* IPv6
//! packets, with one walk. Kernel hot ns, alternating runs, same machine
//! (floor 26–27 ns): acl 10 91 → 80–82, acl 1k 141 → 123–128, acl 10k 166 →
//! 136–137, 10 tenants 126 → 113–117, 10k tenants 125 → 113.
//!
//! # Most specific tree first, trees that cannot win skipped (2026-11-26)
//!
//! The walk scans trees from the last to tree 0 and stops a leaf scan at the
//! best match so far. The compiler now puts the class likeliest to hold the
//! winner last (specific in both addresses; tree 0 is the class wide in both,
//! with the count rules), and the header records for each tree a lower bound
//! of its rule indices ([`Header::first`]): a tree whose bound is at or past
//! the best match is not descended at all. Per packet of the synthetic ACL
//! trace, 1k / 10k / 100k rules: rule checks 9.9 / 7.5 / 8.5 → 2.6 / 2.2 /
//! 3.2, tree steps 7.6 / 8.9 / 11.6 → 4.4 / 5.1 / 6.2, leaf lists read 3.2 /
//! 3.3 / 3.5 → 1.5 / 2.0 / 2.2. Kernel hot ns (floor 26–31 ns): acl 1k 123 →
//! 96, acl 10k 136 → 104. Userspace, 10k rules, one core (the walk now goes
//! tree by tree, so it can skip): 11.2 → 15.9–16.2 M packets/s on distinct
//! keys, 18.2 → 28 on one key repeated.
//!
//! # Bounds on inner nodes too (2026-11-26, later)
//!
//! An inner node's ref carries, in the byte a leaf uses for its count, a
//! lower bound of the rule cells below it ([`Ref::bound`], scaled by
//! [`Header::bound_shift`]): the cell of the first rule of the node's list,
//! which reaches some leaf. A descent stops at a node whose bound is at or
//! past the best match so far, as a whole tree is skipped by
//! [`Header::first`]. Kernel, mean hot ns over 20 trace packets, two
//! alternating pairs of runs: ACL 10k 79.7 → 78.3, FW 10k 91.3 → 86.8,
//! IPC 10k 87–97 → 85.3, ACL 100k 94.6 → 94.8, FW 100k 125 → 112.5; trace
//! FW 100k 1386 → 1293 ns. Userspace, 10k rules, three alternating pairs:
//! ACL 15.7–16.0 → 16.1–17.1 M packets/s, FW 8.8–9.9 → 9.8–10.1. Verified
//! instructions of `fluxgate_classify`: 134k → 129k. The bound's 8 bits
//! lose little: with the exact lowest rule index of every node instead
//! (tenth session, loads per packet of 20k trace packets, 10k / 100k rules)
//! ACL 7.17 / 8.36 → 7.16 / 8.35, FW 11.61 / 13.23 → 11.59 / 13.21, IPC
//! 9.47 / 10.88 → 9.45 / 10.85 — not worth wider refs.
//!
//! # Cuts as wide as the rules pay for (2026-11-26, eleventh session)
//!
//! A cut's first 256 children used to be free and no cut could take more:
//! a node of 9 rules could take 256 children, the root of a tree of 25k
//! rules no more than that. Now a cut may take up to [`MAX_CUT_BITS`] = 16
//! bits, and in a table of more than 2048 rules every child costs half a
//! rule reference in the compiler's space bound (`TreeConfig::spfac` in
//! `fluxgate-ruleset`; smaller tables keep their first 256 children free,
//! which keeps them shallow at a few hundred KB): the roots of the
//! synthetic 10k / 100k tables cut 12–16 bits of an address, their small
//! nodes fewer bits than before. Dependent loads per packet (ACL / FW /
//! IPC): 7.52 / 10.47 / 8.28 → 6.63 / 9.38 / 7.75 at 1k rules, −13 / −18 /
//! −16 % at 10k, −23 / −19 / −21 % at 100k; table bytes per rule 254 / 294
//! / 262 → 315 / 330 / 311 at 1k, 205 / 281 / 237 → 206 / 226 / 220 at
//! 10k, 168 / 237 / 197 → 177 / 242 / 206 at 100k. Measured in alternating
//! runs of both builds:
//! - userspace, 10k rules, one core, three pairs (M keys/s): ACL 16.2–16.5
//!   → 18.1–18.6, FW 7.5–10.1 → 11.6–11.8, IPC 12.9–13.2 → 15.0–15.6;
//! - kernel hot20 (ns, two pairs): ACL 10k 89 / 90 → 85 / 80, FW 10k 99 /
//!   89 → 88 / 85, IPC 10k 88 / 90 → 80 / 81; ACL 100k 95 / 116 → 83 / 83,
//!   FW 100k 110 / 111 → 98 / 100, IPC 100k 96 / 93 → 87 / 82; 1k rules:
//!   ACL 98 / 81 → 100 / 78, FW 89 / 88 → 85 / 95, IPC 99 / 91 → 83 / 83;
//!   10k tenants 105 / 103 → 97 / 98 (dispatch 3 → 2 steps), 10 tenants
//!   unchanged;
//! - kernel trace of 100k distinct packets: unchanged within noise at 1k
//!   and 10k; at 100k ACL 727 / 691 → 714 / 623 ns, IPC 935 / 866 → 905 /
//!   831, FW 1016–1055 → 1060;
//! - compile at 100k rules, best of 8: ACL 91 → 104 ms, FW 151 → 161, IPC
//!   118 → 129 (more, smaller subtrees).
//!
//! Not kept: the first 256 children free in every table with wide cuts
//! allowed (FW 100k: 297 B per rule; charging children past 256 at 2–4
//! references, or wide cuts at the roots only, did not bring it under
//! 273; children past 256 free only in nodes of at most 16 rules: 270), a
//! child at a quarter reference (FW 100k 269 B per rule), and children
//! charged in small tables too (the 10-rule tables of the tenants bench
//! 5–6 steps deep instead of 3–4: hot +25–40 ns).
//!
//! # Path compression below the root (2026-11-26, twelfth session)
//!
//! Below the root, the compiler first narrows a node's region to the bits
//! its rules do not all agree on, so a cut starts below the shared prefix
//! instead of spending a level on bits that separate nothing. The walk is
//! unchanged and does not check the skipped bits: a key that differs there
//! matches no rule of that subtree on that word, so every leaf rule check
//! fails for it, as it must. Dependent loads per packet (ACL / FW / IPC):
//! 6.63 / 9.38 / 7.75 → 6.25 / 9.09 / 7.43 at 1k rules, 6.27 / 9.55 / 7.92
//! → 6.07 / 9.38 / 7.75 at 10k, unchanged at 100k; table bytes per rule at
//! 1k 315 / 330 / 311 → 292 / 278 / 265; 10 tenants: dispatch 4 → 3 steps,
//! 589 → 349 bytes per rule. Not at the root: there the shared prefix is
//! what sends a packet no rule matches (most packets, for a blocklist) to an
//! empty child at once (with it, the tenants bench's 10-rule global table
//! went 1.00 → 1.64 dependent loads per packet). Kernel hot20 in
//! alternating runs moved within this machine's ±15 % noise.
//!
//! # Where that left it (2026-11-26, one full `cargo bench --bench classifier` run)
//!
//! With the dispatcher's fixes of the same day (the key parsed in place, no
//! memset/memcpy subprogram calls: parse-and-pass 47 → 42 ns), floor 27 ns:
//!
//! | | acl 10 | acl 1k | acl 10k | acl 100k | 10 tenants | 10k tenants |
//! |---|---|---|---|---|---|---|
//! | hot ns | 69 | 79 | 79 | 103 | 95 | 96 |
//! | × floor | 2.6 | 2.9 | 2.9 | 3.8 | 3.5 | 3.6 |
//! | trace ns (distinct packets) | 124 | 168 | 172 | 182 | 195 | 220 |
//!
//! Userspace, 10k rules, one core: 16.0 M packets/s (criterion). It is
//! latency-bound: a walk is a chain of dependent loads (≈ 4–5 tree steps,
//! 2 lists, 2 rules per packet at 10k), and the table (2 MB) does not fit in
//! L2. Tried and not kept: leaves of one rule pointing straight at the rule
//! (no list cell; the list cells were few and cached anyway: no change in
//! either walk), descending trees 1.. in lockstep (14.5–15 M/s in the
//! bench, though 18.7 in a standalone loop), 64-byte-aligned cells, a
//! branch-free leaf scan (12 M/s: it loads every rule of the leaf), and
//! interleaving 2–8 packets (≈ 19.5–20 M/s for a bare walk in a standalone
//! loop, but a `classify_keys` batch API built on it, four keys per table
//! walk, measured 13.2 M/s against `classify_key`'s 15.7 in the same bench).
//! Rebuilt on 2026-11-26 as a lockstep walk of 4 lanes (one step of every
//! lane per round, scans after each tree, counts re-read from tree 0's leaf
//! only when a count rule matched) behind `classify_keys` in bursts of 64:
//! 15.4–17.2 M/s in criterion against 16.9 for `classify_key`, while the
//! bare 4-lane walk in a standalone loop ran at 21 (1, 2, 8, 16 lanes: 17.9,
//! 19.8, 17.9, 14.4). What ate the gain, measured piece by piece: recording
//! count rules inside the lane scan (≈ 2 M/s even with none in the table),
//! per-lane table and key pointers (register pressure), and building the
//! per-packet results (≈ 10 %). Not kept. A third time (twelfth session),
//! fully branch-free: 8 lanes, every step and leaf entry a
//! `select_unpredictable`, loads of the next cell and rule issued whatever
//! the lane's state: 0.38–0.43× `classify_key` with the lanes scanning
//! their lists in lock step (every lane waits for the longest list),
//! 0.64–0.67× with a scan per lane, 0.56× with one lane, 0.69× with four
//! (10k rules, ACL / FW / IPC alike): the selects cost more instructions
//! than the mispredicted branches they remove.
//!
//! Measured again (2026-11-26, eleventh session), the table not fitting in
//! L2 is the smaller part: the bare walk of 10k rules over keys of the
//! synthetic trace, M keys/s on one core (ACL / FW / IPC):
//!
//! | keys, order | ACL | FW | IPC | lines touched (ACL) |
//! |---|---|---|---|---|
//! | 1k, cycled (the branch predictor learns the sequence) | 32.2 | 21.9 | 25.5 | 0.22 MB |
//! | 1k, shuffled (cache-resident, branches not learned) | 20.0 | 13.2 | 15.3 | 0.22 MB |
//! | 10k, distinct (as the bench) | 18.2 | 10.9 | 13.0 | 0.80 MB |
//!
//! So ≈ 60 % of the cost above a learned walk is mispredicted branches
//! (which tree still can win, where a descent ends, which leaf rule
//! matches: ≈ 4–5 per key) and ≈ 10 % cache capacity. Tried and not kept:
//! the cells in 2 MB pages (`MADV_HUGEPAGE`: no change, so not TLB misses);
//! every rule's IPv4 half in a dense array of 64-byte heads, or on
//! alternating cache-line parity (no change); descents made branch-free with
//! `select_unpredictable` for their first 1–4 levels (ACL 17.4 → 17.4 /
//! 15.8 / 12.2 / 10.9; skipping trees that way as well: 15.0 at one level).
//! The branches are what let the core start the next tree's loads before
//! the previous tree's rule check has finished: a select turns that
//! speculation into a data dependency.
//!
//! Software prefetch did not help either (2026-11-27, `_mm_prefetch` T0,
//! three runs of 11 rounds each, M keys/s ACL / FW / IPC at 10k rules,
//! baseline 13.6–14.2 / 8.9–9.3 / 10.6–11.0 the same hour): the rule cells
//! of a leaf prefetched before its scan 12.4 / 8.2–8.7 / 9.2–10.0; with the
//! first-level child cell of every tree prefetched too 8.7–12.1 / 6.4–8.5 /
//! 7.7–9.7. Perf (cpu-clock) puts half the walk's samples on two loads,
//! the tree step's child ref and the rule cell's first line: latency that
//! a prefetch issued a few instructions earlier cannot hide, while the
//! extra loads for trees the skip bound would have spared cost bandwidth.
//!
//! # Distinct packets: where the cold time goes (2026-11-26)
//!
//! The bench's trace used to run each of 2,000 packets 100 times, so 99 of
//! every 100 runs were hot. It now runs 100k distinct packets once each, as
//! #4 asks (`cargo bench --bench classifier`, `FLUXGATE_BENCH_100K=1`;
//! floor 31 ns, trace floor ≈ 60 ns, machine noise ±15 % on the trace):
//!
//! | | acl 1k | acl 10k | acl 100k | fw 1k | fw 10k | fw 100k | ipc 1k | ipc 10k | ipc 100k | 10k tenants |
//! |---|---|---|---|---|---|---|---|---|---|---|
//! | hot ns | 79 | 78 | 101 | 114 | 71 | 139 | 108 | 89 | 149 | 95 |
//! | trace ns | 181 | 251 | 734 | 193 | 304 | 1488 | 196 | 314 | 806 | 727 |
//! | trace / hot | 2.3 | 3.2 | 7.3 | 1.7 | 4.3 | 10.7 | 1.8 | 3.5 | 5.4 | 7.6 |
//!
//! Up to 10k rules a packet meets mostly cached cells. At 100k rules (17–24
//! MB of cells) each packet reads ≈ 8–10 cache lines no earlier packet of
//! the trace read — the lower tree levels, leaf lists, rules, the rule
//! counter — one after the other, at ≈ 90–100 ns each on this VM, and a
//! test_run of one packet leaves nothing to overlap with the next. Measured
//! piece by piece on ACL 100k (`ktrace`-style runs, alternating builds):
//! - the per-CPU rule counter cost 60–100 ns of it (an array of per-CPU
//!   pointers, then the value: two cold lines); without it 980–1025 →
//!   905–965 ns. The counters are now one block per CPU in a plain array
//!   (one cold line: see `fluxgate_common::per_cpu`);
//! - descending the trees in lockstep, one level of every tree per round so
//!   their cold loads overlap: trace −7 to −20 % at 100k (FW −7 %), none at
//!   10k, but hot +30–40 % (ACL 10k 77–80 → 106–120 ns): trees the skip bound
//!   would have spared are descended. Not kept. Loading every leaf's list and
//!   first rule before the scan was worse still;
//! - the userspace classifier over the same 100k distinct keys: ≈ 270 ns per
//!   key (ACL), ≈ 700 (FW); lockstep trees did not help there either (the
//!   loop over keys already overlaps one key's misses with the next's).
//!
//! # Inline leaves (2026-11-26, ninth session)
//!
//! A leaf of one or two rules holds their rule cell indices in its own ref
//! ([`Ref::inline_leaf`]) instead of pointing at a list cell: per packet of
//! the synthetic trace ≈ 0.9–1.0 of 1.7–2.0 list reads go (ACL / FW / IPC,
//! 10k and 100k rules), which at 100k rules are cold lines. Both walks read
//! an entry through [`Ref::entry`], which selects between list and ref with
//! a mask: branching on the kind of leaf made the verifier keep it through
//! the scan (`fluxgate_classify` 126k → 744k instructions; with the mask
//! 203k). Kernel, alternating builds (`ktr`-style harness: hot20, and the
//! median of 5 passes over 100k distinct packets), 7 pairs at ACL 100k:
//! trace median 821 → 777 ns (ranges 765–952 → 553–903), hot20 median 94 →
//! 98 ns; FW 100k, 3 pairs: trace 1220–1265 → 910–1268, hot20 unchanged
//! (112–124); ACL / IPC 10k: no clear change either way; hot20 at 1k, three
//! more alternating triples: ACL unchanged, FW +2–4 ns. Userspace: no
//! change (the list cells are few and stay cached; the same finding as
//! one-rule direct leaves, above). Table bytes per rule −1 %. Tried instead
//! of the mask: one branch per leaf into two scans (inline, list) — 191k
//! instructions verified, but hot20 worse in the same triples (FW 1k 95–112
//! ns against 85–88, ACL 1k 87–93 against 77–82).
//!
//! # What a packet costs at 1k rules, and why wider cuts no longer help there (thirteenth session)
//!
//! Per packet of the synthetic 1k-rule traces (20k packets; ACL / FW /
//! IPC): trees descended 2.21 / 3.14 / 2.67, tree steps 3.31 / 5.16 /
//! 3.97, leaf lists read 0.73 / 1.15 / 0.98, rules checked 2.21 / 2.78 /
//! 2.48. A tree step of `fluxgate_classify` is 47 BPF instructions plus
//! the cell lookup the verifier inlines (llvm-objdump of the object), 5 of
//! them stack accesses (the best match, the key, the region's size and
//! base reloaded, the lookup's index stored); an IPv4 rule check is about
//! 45. So the walk is ≈ 450 instructions per packet at 1k, most of them on
//! one dependent chain (ref → key word → child → cell → ref), which is
//! what hot20 measures above parse-and-pass.
//!
//! Depth at 1k rules is not set by the space bound: with the first 1024 /
//! 4096 children of every cut free instead of 256 (small tables only),
//! tree steps per packet stay 3.31 → 3.31 → 3.31 (ACL), 5.16 → 5.15 →
//! 5.13 (FW), 3.97 → 3.97 → 3.96 (IPC), for 292 → 622 → 2924 table bytes
//! per rule (ACL). A tree is ≈ 1.5 steps deep per packet already; what
//! remains is the number of trees a packet must visit (the four address
//! classes) and a rule check per tree. Going below that needs a
//! classifier that reaches the winner without a check per class, such as
//! a fixed-stride trie per field with cross-producted results.
//!
//! # What a packet costs before any tree step (fourteenth session)
//!
//! Kernel hot ns, one program per ruleset, medians of 7 interleaved rounds
//! (floor 21 ns): parse-and-pass (no tables) 44; a gateway with only a
//! default 55 (the dispatch and global regions looked up, their headers
//! read, the default's counter); one rule every packet matches 69–71 (its
//! list entry, its cell, the check, the winner's cell again); ten rules, the
//! packet deciding at the last 98; synthetic ACL 10 / 1k 89 / 98, FW 1k 116.
//! `cargo bench --bench classifier` now measures the one-rule gateway
//! beside the floor (`one_rule`: 71 ns, 3.4× the floor, in its first run).
//! So ≤ 3.1× the floor at 1k rules is below what deciding by a single rule
//! costs in this pipeline; dropping the outcome counter changed nothing
//! measurable (44 → 43, 55 → 54 ns). Where parse-and-pass goes, by builds
//! of the dispatcher that return early (same harness, floor 21 ns): 30–31
//! ns returning right after the parse, 37–39 before the tail call (the
//! dispatch region, the check key, the version slot), 45 through the tail
//! call into a classifier that finds no table.
//!
//! RFC (recursive flow classification: per-chunk equivalence classes, then
//! cross-producted tables, the winner read without any rule check) was
//! measured for the synthetic 1k-rule sets with 16-bit address and port
//! chunks, three reduction orders: ACL phase-0 classes 21–738 per chunk,
//! the final cross product 13,880 × 881 entries (≈ 100 MB, 96 KB per
//! rule) at best; IPC ≈ 250 MB at best; FW over 10^8 entries in every
//! order. Its classes did come out precise (1.04 candidates per final
//! class, 3 at most), so a packet would check one rule, but the memory
//! is ≈ 375× the 256 bytes per rule the tables are held to. Not built.
//!
//! Three trees instead of four (the class specific in the destination
//! merged into the class specific in both, so a packet visits fewer
//! trees): per packet of the synthetic 1k-rule traces trees 2.21 / 3.14 /
//! 2.67 → 1.59 / 2.22 / 1.85 and dependent loads 6.25 / 9.09 / 7.43 →
//! 5.98 / 8.57 / 7.36 (ACL / FW / IPC), 14–32 % fewer bytes per rule; at
//! 10k and 100k rules fewer trees and steps but more leaf lists and rule
//! checks (loads −3 to +5 %, FW 100k 237 → 253 bytes per rule). Kernel
//! hot20, both images in one process, 9 interleaved rounds: 1k 103.5 /
//! 107.0 / 111.7 → 103.2 / 106.0 / 113.0 ns, 10k 109 / 122 / 117 → 118 /
//! 121 / 110 — no change beyond noise, so a tree visited costs little
//! beyond its steps and checks. Not kept.
//!
//! # Packets spread over many tenants (issue #25, 2026-12-03): layout kept
//!
//! What one packet of the tenants bench touches (tenants of 3 rules, 4
//! table rules, the packet decided by the third; counted over 2,000 trace
//! packets with a userspace mirror of both walks): dispatch header and root
//! node (shared, cached), one second-level node (the dispatch tree is 2
//! steps deep at 10, 10k and 65,536 /24s: 31 / 13,329 / 77,825 cells), the
//! tenant's dispatch rule cell; `FG_VERSIONS[t]`; the tenant's slot record;
//! its header (both lines: the leaf list sits at byte 80) and 3 rule cells;
//! the line of its rule counters and of its tenant counters. 11 lines of
//! per-tenant data, 7 of them in 5 pool cells, on one dependent chain
//! (node → dispatch rule → slot record → header → rules → rule counter).
//!
//! Measured with `FLUXGATE_BENCH_ONLY=acl_10000,tenants_ cargo bench
//! --bench classifier` (floor 6 ns), prebuilt binaries of each variant run
//! one after the other in one session; trace ns (net) at 10k / 65,536 tenants:
//!
//! | build | hot ns | 10k trace (net) | 65k trace (net) |
//! |---|---|---|---|
//! | this layout, 4 runs | 77–79 | 774–952 (10.1–12.6) | 1231–1416 (16.9–18.7) |
//! | dispatcher loads the slot record, header, 3 cells after it and both counter lines as soon as the tenant is known, 2 runs | 83–86 | 722–806 (8.6–9.5) | 1222–1280 (15.5–15.7) |
//! | the same without the counter lines | 84–85 | 845 (10.1) | 1277 (15.5) |
//! | *ablation*: no version read, no tenant or rule counter | 73–75 | 796 (10.9) | 1034 (14.7) |
//! | *ablation*: tenants of one rule (table of 2 cells, one check) | 66–67 | 734 (11.3) | 1216 (18.8) |
//! | *ablation*: tenant from the dispatch leaf, its rule cell not read, 2 runs | 68–70 | 760–810 (11.1–12.4) | 1085–1217 (16.8–18.2) |
//! | acl 10k, one table (for comparison) | 70–72 | 309–410 (4.2–5.8) | – |
//!
//! None of them comes near net 4, and the warm-up loads cost 7 ns hot, so
//! nothing was kept: with misses already overlapping, removing one line or
//! one level of the chain moves the 10k trace less than this machine's
//! run-to-run spread. Only the dispatch rule cell (8 MB of cells at 65,536
//! tenants) showed, at 65,536 tenants (−15 % in one of two pairs) and hot
//! (−8–10 ns): an exact dispatch leaf (the tenant in the leaf when its
//! region lies inside the prefix; path compression and the family word make
//! that a compiler change) would bring that. What separates 10k tenants
//! from 10k rules in one table is presumably the spread (not measured with
//! PMU counters): per packet 7 distinct pages of per-tenant data in 8 MB of
//! pool at 10k tenants, 52 MB at 65,536 (2 MB of table at acl 10k), in
//! 4 KiB vmalloc pages. Net 4 would need a tenant's per-packet data (slot,
//! version, counters, table) in one or two lines, which the per-tenant flip
//! (a record apart from the dispatch table, which does not change when a
//! tenant does) and per-CPU counters do not allow as laid out.
//!
//! # What did not work (so the next attempt starts from the facts)
//!
//! Leaves holding their rules inline as *residual checks* (per rule only the
//! words it constrains beyond what the tree fixed on the way, 12-byte
//! `{word/mask, lo, span}` ops, an end op with action/counter/priority) were
//! built and passed every differential test, but:
//! - the verifier's 1M-instruction budget, with three inlined walks of four
//!   trees, holds only about 8 unrolled leaf cells (80 ops) per walk — 4 + 1 +
//!   1 + 1 or 2 + 2 + 2 + 2 cells verify, 3 per tree or 6 + 1 + 1 + 1 do not,
//!   and one more live register (a shared-check accumulator) tips 4 + 1 + 1 + 1
//!   over. ClassBench-like IPv4 rules need 9–13 checks each (the zero words 1–3
//!   of both addresses, family, L4, proto, ports), so leaves hold 1–4 rules
//!   and the trees deepen until compilation runs out of memory budget;
//! - `bpf_loop` callbacks verify cheaply and *are* inlined, but a callback
//!   reached by tables of both outer maps gets the generic (indirect)
//!   `bpf_map_lookup_elem` instead of the direct array lookup: +100 ns per packet
//!   (table above). A callback called only for long leaves still exceeded the
//!   budget: it is re-verified for every distinct caller state;
//! - state that differs per exit path multiplies what the verifier explores
//!   across trees and walks: even the current walk, keeping the winner's
//!   action/counter in a register at the match (to save the final lookup of
//!   its cell), exceeds the budget. Dropping that register from the
//!   residual-check walk (only the winner's priority kept, the decision read
//!   once after all trees) was not enough either: 4 cells per tree still
//!   exceeded it. Cheaper verification needs fewer paths per op (the end op
//!   has four branches) or fewer unrolled tree × walk copies;
//! - an IPv4 build of the rule check (address words 1–3 skipped, ≈ 40 % fewer
//!   instructions per rule; 1k / 10k rules 152 / 171 → 135 / 147 ns when it
//!   was the only live copy) did not fit beside the general one: inlined in
//!   one program, LLVM merged the two walks into one loop that branches on the
//!   family per rule and the verifier ran past 1M instructions; as a program
//!   of its own (a second tail-call entry per version) it verified only as an
//!   out-of-line subprogram (100k instructions), and the call plus the extra
//!   tail call cost more than the check saved (parse-and-pass 59 → 72–77 ns,
//!   10k tenants 140 → 148–157; measured 2026-11-25). The rule-shape bit
//!   (above) got the same saving by branching on the rule instead;
//! - 32-bit ALU codegen (`bpf-linker --cpu-features=+alu32`; aya-build fixes
//!   the eBPF crate's rustflags, so `-C target-cpu=v3` cannot be set) would
//!   drop the zero-extending shift pair after each 32-bit subtraction, but
//!   the object was refused: "R1 !read_ok", a store of a register a helper
//!   call had just clobbered (measured 2026-11-25, bpf-linker 0.13, LLVM 22);
//! - a `bool` per check is a branch in BPF (no set-on-compare): the verifier's
//!   paths double per check. Accumulate `span - (key - lo)` in a u64 and test
//!   bit 63 once per rule instead (as [`RuleCell::matches`] does);
//! - the pool as *one* map value of all its cells (ARRAY, one entry, value
//!   size = cells × 128, created by the loader and handed to aya through a
//!   pin; the cell count a frozen `.rodata` global the verifier reads as a
//!   constant), each cell reached by pointer arithmetic on that value instead
//!   of an inlined `bpf_map_lookup_elem`, whose key the JIT stores to the
//!   stack and reloads on every dependent step. Verified and ran (2026-11-26,
//!   tenth session), kernel hot ns of synthetic ACL 1k, 30 runs of each build
//!   alternating: the value looked up once per access 75 → 81 (median), the
//!   value's pointer kept in the table's `Region` 72 → 73. The stack round
//!   trip is not what a tree step costs on this CPU; not kept.
//!
//! # Layout
//!
//! A table is an array of [`Cell`]s (128 bytes): in the kernel a region of
//! the attachment's cell pool, every index relative to the region's start.
//! Cell 0 is the [`Header`]; its last [`LIST_SLOTS`] − [`HEADER_LIST_SLOT`]
//! list slots ([`Header::lists`]) hold the lists of trees that are a single
//! leaf, so a small table needs no list cell (a leaf ref may point at cell 0).
//! Every other cell is a *node* — 16 [`Ref`]s, the children of a cut —, a *leaf
//! list* — up to [`LEAF_MAX`] `u32` rule cell indices in priority order — or a
//! *rule* ([`RuleCell`]). A [`Ref`] says where the next step is and how to index
//! it: `child = (key[word] >> shift) & (2^bits - 1)`, found in cell
//! `cell + child / 16`, slot `child % 16`. A leaf ref of one or two rules
//! holds their indices itself ([`Ref::inline_leaf`]); any other leaf ref
//! points at a list cell,
//! the slot its list starts at and says how many entries it has: lists are
//! packed, up to 32 slots per cell (most lists hold 1–4 rules: table bytes per
//! synthetic ClassBench ACL rule at 1k / 10k / 100k rules went from 409 / 335 /
//! 294 with one cell per list to 343 / 241 / 200 packed). Rules
//! are stored once; a rule that falls into several leaves costs 4 bytes per
//! extra leaf, not a whole cell.
//!
//! # Key
//!
//! The packet key is [`KEY_WORDS`] `u32` words in *host* order (numeric order is
//! what range cuts and range checks need; one byte swap per field is cheaper than
//! anything else here). See the [`word`] constants.

/// Number of u32 words in a packet key (the last one holds TCP flags).
pub const KEY_WORDS: usize = 16;
/// Number of key words a rule constrains with a `[lo, hi]` range.
pub const RANGE_WORDS: usize = 15;
/// Most steps from the root to a leaf.
pub const MAX_DEPTH: usize = 20;
/// Most rules in one leaf (checked one by one, in priority order).
pub const LEAF_MAX: usize = 16;
/// Most count rules counted for one packet in one table (further ones are not).
pub const COUNT_MAX: usize = 16;
/// Refs per node cell.
pub const REFS_PER_CELL: usize = 16;
/// Rule index slots per list cell (a leaf's list lies within one cell).
pub const LIST_SLOTS: usize = 2 * REFS_PER_CELL;
/// Most cut bits in one node (up to 2^16 children, 4096 node cells). How
/// wide a cut may be for the rules it separates is the compiler's space
/// bound: a node of 25k rules may cut 16 bits, one of 9 rules at most 6.
pub const MAX_CUT_BITS: u32 = 16;

/// Indices of the key words.
pub mod word {
    /// Source address: IPv4 in `SRC`, zeros in `SRC + 1..SRC + 4`; IPv6 as four
    /// big-endian 32-bit words, most significant first.
    pub const SRC: usize = 0;
    /// Destination address, same encoding as [`SRC`].
    pub const DST: usize = 4;
    /// Source port; ICMP type for ICMP/ICMPv6; without an L4 header
    /// ([`L4`] 0): [`super::LATER_FRAGMENT`] for a non-first fragment, else 0.
    pub const SPORT: usize = 8;
    /// Destination port; ICMP code for ICMP/ICMPv6; 0 without an L4 header.
    pub const DPORT: usize = 9;
    /// IP protocol (after the IPv6 extension-header chain).
    pub const PROTO: usize = 10;
    /// 1 when the L4 header was parsed (not a non-first fragment), else 0.
    pub const L4: usize = 11;
    /// 4 or 6.
    pub const FAMILY: usize = 12;
    /// Outer VLAN id, or [`super::VLAN_NONE`] when untagged.
    pub const VLAN: usize = 13;
    /// Ingress interface index.
    pub const IFINDEX: usize = 14;
    /// TCP flags byte (0 when not TCP); matched with mask/value, never cut on.
    /// An ICMPv6 key has [`super::HOP_LIMIT_255`] here when its hop limit is 255.
    pub const TCP_FLAGS: usize = 15;
}

/// [`word::SPORT`] of a non-first fragment (whose [`word::L4`] is 0: it has
/// no L4 header, so no port), which is what a `fragment` rule matches. A
/// word no other packet without an L4 header sets, so the mark costs no key
/// bit and no check: the rule is the range `L4 = 0, SPORT = 1`.
pub const LATER_FRAGMENT: u32 = 1;

/// Bit of [`word::TCP_FLAGS`] set in an ICMPv6 packet's key when its hop
/// limit is 255 (what [`neighbor_discovery`] needs). Above the flags byte,
/// so no rule check sees it ([`CheckKey::of`] keeps the byte only), and
/// only ICMPv6 keys, which have no TCP flags, carry it.
pub const HOP_LIMIT_255: u32 = 1 << 8;

/// Whether `key` is an IPv6 neighbour discovery message as RFC 4861 accepts
/// one: ICMPv6 (with its header), type 133–137 (router solicitation and
/// advertisement, neighbour solicitation and advertisement, redirect), code 0,
/// hop limit 255 (sent on this link: a router decrements it). The dispatcher
/// passes such a packet before tenant dispatch, and the userspace engines
/// decide by this same function; any other ICMPv6 packet is classified.
#[inline(always)]
pub const fn neighbor_discovery(key: &[u32; KEY_WORDS]) -> bool {
    key[word::TCP_FLAGS] & HOP_LIMIT_255 != 0
        && key[word::PROTO] == 58
        && key[word::L4] == 1
        && key[word::SPORT].wrapping_sub(133) <= 137 - 133
        && key[word::DPORT] == 0
}

/// [`word::VLAN`] value of an untagged packet (just above the largest VLAN id,
/// so the word stays 13 bits wide for the tree's cuts).
pub const VLAN_NONE: u32 = 0x1000;

/// Significant bits of each key word: every key value fits in them, so the
/// tree compiler never spends cuts on bits that are always zero.
pub const WORD_BITS: [u32; KEY_WORDS] =
    [32, 32, 32, 32, 32, 32, 32, 32, 16, 16, 8, 1, 3, 13, 32, 8];

/// Rule actions.
pub mod action {
    /// Pass the packet; classification ends.
    pub const PASS: u8 = 0;
    /// Drop the packet; classification ends.
    pub const DROP: u8 = 1;
    /// Count the packet and continue with the next rule.
    pub const COUNT: u8 = 2;
    /// Dispatch table only: the packet belongs to tenant `RuleCell::counter`.
    pub const TENANT: u8 = 3;
    /// A `pass` rule with a rate limit: it decides (pass) only for a packet
    /// over its limit; a packet within it goes on past the rule (the walk
    /// is taken again after it). The compiler does not treat it as ending
    /// classification (rules behind it stay in the leaves), the walk does.
    pub const LIMIT_PASS: u8 = 4;
    /// [`LIMIT_PASS`] for a `drop` rule.
    pub const LIMIT_DROP: u8 = 5;

    /// The verdict a limited rule gives when over its limit (`PASS`/`DROP`),
    /// or `action` itself.
    pub const fn unlimited(action: u8) -> u8 {
        match action {
            LIMIT_PASS => PASS,
            LIMIT_DROP => DROP,
            a => a,
        }
    }
}

/// A reference to the next step of the walk, packed in a `u64`.
///
/// bits 0–31 cell index · 32–39 key word · 40–47 shift (leaf: first list slot)
/// · 48–55 cut bits (0 = leaf) · 56–62 leaf rule count, 63 inline flag (inner
/// node: 56–63 bound of its rule indices, see [`Ref::bound`]).
///
/// An *inline* leaf ([`Ref::inline_leaf`]) of one or two rules holds their
/// rule cell indices itself, in bits 0–23 and 24–47, instead of pointing at a
/// list cell: a walk reading it skips one dependent load.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ref(pub u64);

impl Ref {
    /// An inner node: cut `bits` bits of key word `word` starting at bit `shift`;
    /// the children start at cell `cell`.
    pub const fn node(cell: u32, word: u8, shift: u8, bits: u8) -> Ref {
        Ref(cell as u64 | (word as u64) << 32 | (shift as u64) << 40 | (bits as u64) << 48)
    }
    /// A leaf: the list cell `cell` holds `count` rule cell indices (`count` = 0:
    /// no rule matches; `cell` is then ignored), from slot 0.
    pub const fn leaf(cell: u32, count: u8) -> Ref {
        Ref::leaf_at(cell, 0, count)
    }
    /// A leaf whose `count` rule cell indices start at slot `slot` (< 32) of
    /// list cell `cell`.
    pub const fn leaf_at(cell: u32, slot: u8, count: u8) -> Ref {
        Ref(cell as u64 | (slot as u64) << 40 | (count as u64) << 56)
    }
    /// First slot of a leaf's list in its list cell (masked to a valid slot).
    #[inline(always)]
    pub const fn slot(self) -> usize {
        ((self.0 >> 40) as usize) & (LIST_SLOTS - 1)
    }
    /// First cell.
    #[inline(always)]
    pub const fn cell(self) -> u32 {
        self.0 as u32
    }
    /// Key word cut by this node.
    #[inline(always)]
    pub const fn word(self) -> usize {
        ((self.0 >> 32) & 0xff) as usize
    }
    /// Shift applied to the key word.
    #[inline(always)]
    pub const fn shift(self) -> u32 {
        ((self.0 >> 40) & 0xff) as u32
    }
    /// Cut bits; 0 for a leaf.
    #[inline(always)]
    pub const fn bits(self) -> u32 {
        ((self.0 >> 48) & 0xff) as u32
    }
    /// Rule indices of the leaf (in its list cell, or inline).
    #[inline(always)]
    pub const fn count(self) -> u32 {
        ((self.0 >> 56) & 0x7f) as u32
    }
    /// An inline leaf of `entries` (rule cell indices, in priority order):
    /// `None` unless there are one or two, each below 2^24.
    pub const fn inline_leaf(entries: &[u32]) -> Option<Ref> {
        let (a, b) = match *entries {
            [a] => (a, 0),
            [a, b] => (a, b),
            _ => return None,
        };
        if a > Ref::INLINE_MAX || b > Ref::INLINE_MAX {
            return None;
        }
        Some(Ref(a as u64
            | (b as u64) << 24
            | (entries.len() as u64 | 0x80) << 56))
    }
    /// Largest rule cell index an inline leaf holds.
    pub const INLINE_MAX: u32 = (1 << 24) - 1;
    /// Whether this leaf holds its rule indices itself ([`Ref::inline_leaf`]).
    #[inline(always)]
    pub const fn is_inline(self) -> bool {
        self.is_leaf() && self.0 >> 63 != 0
    }
    /// Rule cell index `i` (0 or 1, masked) of an inline leaf.
    #[inline(always)]
    pub const fn inline_entry(self, i: usize) -> u32 {
        ((self.0 >> (24 * (i & 1))) as u32) & Ref::INLINE_MAX
    }
    /// A leaf's list mask: all ones for a list leaf, 0 for an inline one.
    /// Both walks select with it instead of branching on the kind of leaf:
    /// a branch would make the verifier track the kind through the whole
    /// scan and stop pruning (`fluxgate_classify` verified 126k → 744k
    /// instructions with one).
    #[inline(always)]
    const fn list_mask(self) -> u32 {
        !(((self.0 as i64) >> 63) as u32)
    }
    /// The cell a leaf's entries are read from ([`Ref::entry`]): its list
    /// cell, or cell 0 (the header; not used) for an inline leaf.
    #[inline(always)]
    pub const fn list_cell(self) -> u32 {
        self.cell() & self.list_mask()
    }
    /// Rule cell index `i` of a leaf whose [`Ref::list_cell`] is `list`
    /// (slots masked into the cell: a corrupt ref stays in it).
    #[inline(always)]
    pub const fn entry(self, list: &[u32; LIST_SLOTS], i: usize) -> u32 {
        let m = self.list_mask();
        (list[(self.slot() + i) & (LIST_SLOTS - 1)] & m) | (self.inline_entry(i) & !m)
    }
    /// Inner nodes: a lower bound of the rule cell indices in the subtree,
    /// scaled down by [`Header::bound_shift`] (0: none known). A walk whose
    /// best match so far is at or before it need not descend: nothing there
    /// can win.
    #[inline(always)]
    pub const fn bound(self) -> u32 {
        (self.0 >> 56) as u32
    }
    /// Whether nothing below this inner node can beat the best match `best`:
    /// its bound, scaled by its table's `bound_shift` ([`Header::bound_shift`]),
    /// is at or past it.
    #[inline(always)]
    pub const fn beaten(self, bound_shift: u32, best: u32) -> bool {
        (self.bound() as u64) << (bound_shift & 31) >= best as u64
    }
    /// This inner node with `bound` ([`Ref::bound`]).
    pub const fn with_bound(self, bound: u8) -> Ref {
        Ref(self.0 & !(0xff << 56) | (bound as u64) << 56)
    }
    /// Whether this is a leaf.
    #[inline(always)]
    pub const fn is_leaf(self) -> bool {
        self.bits() == 0
    }
    /// Index of the child a key selects (only meaningful for nodes).
    #[inline(always)]
    pub const fn child(self, key_word: u32) -> u32 {
        // Masked shifts: a corrupt ref can pick a wrong child, never undefined behaviour.
        key_word.wrapping_shr(self.shift()) & ((1u32 << (self.bits() & 31)) - 1)
    }
}

/// One 128-byte cell of a table: a header, a node, or a rule, by position.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The raw contents.
    pub raw: [u64; REFS_PER_CELL],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            raw: [0; REFS_PER_CELL],
        }
    }
}

/// A rule as the walk checks it, encoded for a short branch-free check (see
/// [`RuleCell::matches`]): the eight address words and the ingress interface
/// as `(lo, hi - lo)` pairs, the six small fields (ports, protocol, L4, family,
/// VLAN) as lanes of one `u64` ([`small`]), the TCP flags as mask/value.
/// Everything an IPv4 check reads lies in the first 64 bytes (one cache line).
/// Build it with [`RuleCell::from_ranges`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleCell {
    /// Lower bounds of the small fields, packed as [`small::pack`] does.
    pub small_lo: u64,
    /// Upper bounds of the small fields, packed, with every guard bit set.
    pub small_hi: u64,
    /// Lower bound of the ingress interface index.
    pub ifindex_lo: u32,
    /// `hi - lo` of the ingress interface index.
    pub ifindex_span: u32,
    /// Counter slot (per-CPU rule counters); tenant index for [`action::TENANT`].
    pub counter: u32,
    /// One of [`action`].
    pub action: u8,
    /// TCP flags mask.
    pub flags_mask: u8,
    /// TCP flags value under the mask (a bit outside the mask: never matches).
    pub flags_value: u8,
    /// [`RuleCell::HIGH_WORDS`] or 0.
    pub shape: u8,
    /// `[lo, hi - lo]` of each address word, in [`ADDR_WORDS`] order.
    pub addr: [[u32; 2]; 8],
    /// Explicit padding up to the cell size.
    pub _pad1: [u64; 4],
}

/// The key words of both addresses in the order rule cells and check keys
/// hold them: the first word of each address (all of an IPv4 address), then
/// the rest.
pub const ADDR_WORDS: [usize; 8] = [
    word::SRC,
    word::DST,
    word::SRC + 1,
    word::SRC + 2,
    word::SRC + 3,
    word::DST + 1,
    word::DST + 2,
    word::DST + 3,
];

/// The packet's key as a rule check reads it (computed once per packet from
/// the [`KEY_WORDS`] key: [`CheckKey::of`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckKey {
    /// The address words, in [`ADDR_WORDS`] order.
    pub addr: [u32; 8],
    /// The small fields packed ([`small::pack`]), guard bits clear.
    pub small: u64,
    /// The same with every guard bit set.
    pub small_guarded: u64,
    /// Ingress interface index.
    pub ifindex: u32,
    /// TCP flags byte.
    pub flags: u32,
}

/// The small key fields packed in one `u64`, each in a lane of its own width
/// ([`WORD_BITS`]) with one guard bit above it, so one subtraction compares
/// every lane at once (SWAR): `(key | GUARDS) - lo` keeps a lane's guard bit
/// set exactly when `key ≥ lo` in that lane, and no borrow crosses lanes.
pub mod small {
    use super::{KEY_WORDS, WORD_BITS, word};

    /// Key words packed, lowest lane first.
    pub const WORDS: [usize; 6] = [
        word::SPORT,
        word::DPORT,
        word::PROTO,
        word::L4,
        word::FAMILY,
        word::VLAN,
    ];

    /// Bit offset of each lane (`WORDS[i]`): lanes are laid out back to back,
    /// each followed by its guard bit.
    pub const SHIFT: [u32; 6] = {
        let mut s = [0u32; 6];
        let mut i = 1;
        while i < 6 {
            s[i] = s[i - 1] + WORD_BITS[WORDS[i - 1]] + 1;
            i += 1;
        }
        s
    };

    /// Largest value of each lane.
    pub const MAX: [u32; 6] = {
        let mut m = [0u32; 6];
        let mut i = 0;
        while i < 6 {
            m[i] = (1u32 << WORD_BITS[WORDS[i]]) - 1;
            i += 1;
        }
        m
    };

    /// Every lane's guard bit.
    pub const GUARDS: u64 = {
        let mut g = 0u64;
        let mut i = 0;
        while i < 6 {
            g |= 1u64 << (SHIFT[i] + WORD_BITS[WORDS[i]]);
            i += 1;
        }
        g
    };

    const _: () = assert!(SHIFT[5] + WORD_BITS[WORDS[5]] < 64);

    /// Packs the small words of `key` (each must fit its lane: [`WORD_BITS`]).
    #[inline(always)]
    pub const fn pack(key: &[u32; KEY_WORDS]) -> u64 {
        (key[word::SPORT] as u64 & MAX[0] as u64) << SHIFT[0]
            | (key[word::DPORT] as u64 & MAX[1] as u64) << SHIFT[1]
            | (key[word::PROTO] as u64 & MAX[2] as u64) << SHIFT[2]
            | (key[word::L4] as u64 & MAX[3] as u64) << SHIFT[3]
            | (key[word::FAMILY] as u64 & MAX[4] as u64) << SHIFT[4]
            | (key[word::VLAN] as u64 & MAX[5] as u64) << SHIFT[5]
    }
}

impl CheckKey {
    /// The check form of `key`.
    #[inline(always)]
    pub const fn of(key: &[u32; KEY_WORDS]) -> CheckKey {
        let small = small::pack(key);
        CheckKey {
            addr: [
                key[ADDR_WORDS[0]],
                key[ADDR_WORDS[1]],
                key[ADDR_WORDS[2]],
                key[ADDR_WORDS[3]],
                key[ADDR_WORDS[4]],
                key[ADDR_WORDS[5]],
                key[ADDR_WORDS[6]],
                key[ADDR_WORDS[7]],
            ],
            small,
            small_guarded: small | small::GUARDS,
            ifindex: key[word::IFINDEX],
            flags: key[word::TCP_FLAGS] & 0xff,
        }
    }
}

/// Cell 0 of every table.
///
/// A table holds 1 to [`MAX_TREES`] trees over disjoint parts of its rules
/// (wildcard-heavy rule sets are split so each tree cuts the fields its rules
/// are specific in). Rule cells are laid out in priority order, so across trees
/// the matching rule with the *lowest cell index* wins. Trees are walked from
/// the last to tree 0 and a leaf scan stops at the best index found so far;
/// every count rule lives in tree 0, so when tree 0 is scanned the winner among
/// the other trees is known and a matched count rule can be counted at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Where the walk of tree 0 starts.
    pub root: Ref,
    /// Magic + ABI version: [`Header::MAGIC`].
    pub magic: u32,
    /// Action when no rule decides: [`action::PASS`] or [`action::DROP`]
    /// (tenant default, or the gateway default in the global table).
    pub default_action: u32,
    /// Counter slot of the default action.
    pub default_counter: u32,
    /// Number of cells in the table.
    pub cells: u32,
    /// Generation number this table belongs to.
    pub generation: u64,
    /// Roots of trees 1.. (only the first `trees - 1` are used).
    pub more_roots: [Ref; MAX_TREES - 1],
    /// Number of trees (1..=[`MAX_TREES`]; 0 is read as 1).
    pub trees: u32,
    /// Scale of the node bounds ([`Ref::bound`]): a node's subtree holds no
    /// rule cell index below `bound << bound_shift`.
    pub bound_shift: u32,
    /// A lower bound of the rule cell indices in each tree's leaves (0: none
    /// known). The walk skips a tree whose bound is at or past the best match
    /// found so far: none of its rules can win, nor be counted.
    pub first: [u32; MAX_TREES],
    /// Leaf list slots inside the header: slots [`HEADER_LIST_SLOT`].. of
    /// cell 0 read as a list cell. A tree that is a single leaf keeps its
    /// list here, so a small table (a typical tenant's) is its header and its
    /// rules: one cell fewer to read per packet.
    pub lists: [u32; LIST_SLOTS - HEADER_LIST_SLOT],
}

/// First list slot of cell 0 (the header) that leaf lists may use
/// ([`Header::lists`]).
pub const HEADER_LIST_SLOT: usize = 20;

const _: () = assert!(core::mem::offset_of!(Header, lists) == HEADER_LIST_SLOT * 4);

/// Most trees in one table.
pub const MAX_TREES: usize = 4;

impl Header {
    /// The root of tree `t` (tree 0 for `t` out of range).
    #[inline(always)]
    pub fn root_of(&self, t: usize) -> Ref {
        match t {
            1 => self.more_roots[0],
            2 => self.more_roots[1],
            3 => self.more_roots[2],
            _ => self.root,
        }
    }

    /// [`Header::first`] of tree `t` (`t` is taken modulo [`MAX_TREES`]).
    #[inline(always)]
    pub fn first_of(&self, t: usize) -> u32 {
        self.first[t & (MAX_TREES - 1)]
    }
}

impl Header {
    /// `"FG"` + table ABI version 6 (5: rule cells in check form, with
    /// [`RuleCell::shape`]; 6: inline leaves, [`Ref::inline_leaf`]).
    pub const MAGIC: u32 = 0x4647_0006;
}

impl RuleCell {
    /// [`RuleCell::shape`] bit: the check must read address words 1–3 (the
    /// second half of the cell). Clear when no key as packets make them can
    /// fail there without failing elsewhere: the rule's family lane excludes
    /// 6 (an IPv4 key's words 1–3 are 0, and a rule whose words there exclude
    /// 0 has its family lane raised past 4), or all six words are full ranges.
    /// Clear for every rule of an IPv4 ruleset, whose checks are then ≈ 40 %
    /// shorter and touch one cache line.
    pub const HIGH_WORDS: u8 = 1;

    /// A rule matching every packet.
    pub const fn any(action: u8, counter: u32) -> RuleCell {
        RuleCell::from_ranges(
            &[0; RANGE_WORDS],
            &[u32::MAX; RANGE_WORDS],
            0,
            0,
            action,
            counter,
        )
    }

    /// The rule matching keys whose range words all lie in `[lo, hi]` and
    /// whose TCP flags satisfy `flags & flags_mask == flags_value` — keys as
    /// packets make them: every word within its [`WORD_BITS`], family 4 or 6,
    /// zeros in an IPv4 key's address words 1–3 (other keys may be judged
    /// differently: see the family lane below). A rule no key can match (some
    /// `lo > hi`, or a value bit outside the mask) is encoded as one that
    /// never matches.
    pub const fn from_ranges(
        lo: &[u32; RANGE_WORDS],
        hi: &[u32; RANGE_WORDS],
        flags_mask: u8,
        flags_value: u8,
        action: u8,
        counter: u32,
    ) -> RuleCell {
        let mut never = flags_value & !flags_mask != 0;
        // An IPv4 key has zeros in address words 1–3: a rule whose words
        // there exclude 0 cannot match IPv4, and says so in its family lane
        // (so IPv4 checks may skip those words: `matches_family`).
        let mut lo = *lo;
        let mut i = 2;
        while i < 8 {
            if lo[ADDR_WORDS[i]] > 0 && lo[word::FAMILY] < 5 {
                lo[word::FAMILY] = 5;
            }
            i += 1;
        }
        let lo = &lo;
        let mut addr = [[0u32; 2]; 8];
        let mut i = 0;
        while i < 8 {
            let w = ADDR_WORDS[i];
            never |= lo[w] > hi[w];
            addr[i] = [lo[w], hi[w].wrapping_sub(lo[w])];
            i += 1;
        }
        never |= lo[word::IFINDEX] > hi[word::IFINDEX];
        let (mut small_lo, mut small_hi) = (0u64, small::GUARDS);
        let mut i = 0;
        while i < 6 {
            let (l, h) = (lo[small::WORDS[i]], hi[small::WORDS[i]]);
            let max = small::MAX[i];
            // Keys never exceed a lane's maximum, so bounds above it clamp.
            never |= l > h || l > max;
            let h = if h > max { max } else { h };
            small_lo |= (l as u64 & max as u64) << small::SHIFT[i];
            small_hi |= (h as u64) << small::SHIFT[i];
            i += 1;
        }
        let (flags_mask, flags_value) = if never {
            (0, 1)
        } else {
            (flags_mask, flags_value)
        };
        let family_6 = lo[word::FAMILY] <= 6 && 6 <= hi[word::FAMILY];
        let mut high_full = true;
        let mut i = 2;
        while i < 8 {
            high_full &= addr[i][0] == 0 && addr[i][1] == u32::MAX;
            i += 1;
        }
        let shape = if family_6 && !high_full {
            RuleCell::HIGH_WORDS
        } else {
            0
        };
        RuleCell {
            addr,
            small_lo,
            small_hi,
            ifindex_lo: lo[word::IFINDEX],
            ifindex_span: hi[word::IFINDEX].wrapping_sub(lo[word::IFINDEX]),
            counter,
            action,
            flags_mask,
            flags_value,
            shape,
            _pad1: [0; 4],
        }
    }

    /// Whether the packet whose check key is `k` matches this rule.
    ///
    /// Branch-free and unrolled on purpose: every failed test sets bit 63 of
    /// one accumulator, tested once. A branch per test would make the
    /// verifier explore a path per test and rule (past its 1M-instruction
    /// budget), and a loop over words was ≈ 17 BPF instructions per word; this
    /// is ≈ 6 per address word and ≈ 8 for all six small fields together.
    #[inline(always)]
    pub fn matches(&self, k: &CheckKey) -> bool {
        self.matches_family::<true>(k)
    }

    /// [`RuleCell::matches`] for a packet known to be IPv4 (`V6 = false`:
    /// its key has zeros in address words 1–3, which are then not read, so
    /// the check touches only the cell's first cache line) or of any kind
    /// (`V6 = true`). Equivalent: a rule whose words 1–3 exclude 0 has its
    /// family lane raised past 4 by [`RuleCell::from_ranges`].
    #[inline(always)]
    pub fn matches_family<const V6: bool>(&self, k: &CheckKey) -> bool {
        // key in [lo, lo + span] ⇔ key - lo ≤ span (mod 2^32): the u64
        // difference below goes negative (bit 63) exactly when it is not.
        #[inline(always)]
        fn outside([lo, span]: [u32; 2], key: u32) -> u64 {
            u64::from(span).wrapping_sub(u64::from(key.wrapping_sub(lo)))
        }
        let a = &self.addr;
        let mut out = outside(a[0], k.addr[0])
            | outside(a[1], k.addr[1])
            | outside([self.ifindex_lo, self.ifindex_span], k.ifindex);
        // A branch on the rule, not the packet: both sides leave the same
        // kind of state, so the verifier prunes one at the join.
        if V6 && self.shape & RuleCell::HIGH_WORDS != 0 {
            out |= outside(a[2], k.addr[2])
                | outside(a[3], k.addr[3])
                | outside(a[4], k.addr[4])
                | outside(a[5], k.addr[5])
                | outside(a[6], k.addr[6])
                | outside(a[7], k.addr[7]);
        }
        // Small fields: a lane's guard bit survives both subtractions exactly
        // when lo ≤ key ≤ hi in that lane; a missing one (≤ 2^62) negates to
        // a value with bit 63 set.
        let above = k.small_guarded.wrapping_sub(self.small_lo);
        let below = self.small_hi.wrapping_sub(k.small);
        out |= ((above & below & small::GUARDS) ^ small::GUARDS).wrapping_neg();
        let flags = (k.flags & u32::from(self.flags_mask)) ^ u32::from(self.flags_value);
        out |= u64::from(flags).wrapping_neg();
        out >> 63 == 0
    }
}

/// Reinterpretations of a [`Cell`].
impl Cell {
    /// The cell as a rule.
    #[inline(always)]
    pub fn rule(&self) -> &RuleCell {
        // SAFETY: RuleCell is repr(C), 128 bytes, alignment 4 ≤ Cell's 8, and
        // every bit pattern is a valid RuleCell (only integers).
        unsafe { &*(self as *const Cell).cast::<RuleCell>() }
    }
    /// The cell as a header.
    #[inline(always)]
    pub fn header(&self) -> &Header {
        // SAFETY: as for `rule`: same size, compatible alignment, integers only.
        unsafe { &*(self as *const Cell).cast::<Header>() }
    }
    /// The cell as leaf lists of rule cell indices (a leaf uses [`Ref::count`]
    /// of them from [`Ref::slot`]).
    #[inline(always)]
    pub fn list(&self) -> &[u32; 2 * REFS_PER_CELL] {
        // SAFETY: [u32; 32] is 128 bytes with alignment 4; integers only.
        unsafe { &*(self as *const Cell).cast::<[u32; 2 * REFS_PER_CELL]>() }
    }
    /// The cell as leaf lists, writable (for packing lists into it).
    pub fn list_mut(&mut self) -> &mut [u32; LIST_SLOTS] {
        // SAFETY: as for `list`; every bit pattern is valid for both types.
        unsafe { &mut *(self as *mut Cell).cast::<[u32; LIST_SLOTS]>() }
    }
    /// A leaf list cell holding `indices` (at most [`LEAF_MAX`]) from slot 0.
    pub fn from_list(indices: &[u32]) -> Cell {
        let mut words = [0u32; 2 * REFS_PER_CELL];
        let n = if indices.len() < LEAF_MAX {
            indices.len()
        } else {
            LEAF_MAX
        };
        words[..n].copy_from_slice(&indices[..n]);
        let mut cell = Cell::default();
        // SAFETY: same size; Cell has no invalid bit patterns.
        unsafe { core::ptr::write((&mut cell as *mut Cell).cast::<[u32; 32]>(), words) };
        cell
    }
    /// A cell holding `rule`.
    pub fn from_rule(rule: &RuleCell) -> Cell {
        let mut cell = Cell::default();
        // SAFETY: same size; Cell has no invalid bit patterns.
        unsafe { core::ptr::write((&mut cell as *mut Cell).cast::<RuleCell>(), *rule) };
        cell
    }
    /// A cell holding `header`.
    pub fn from_header(header: &Header) -> Cell {
        let mut cell = Cell::default();
        // SAFETY: same size; Cell has no invalid bit patterns.
        unsafe { core::ptr::write((&mut cell as *mut Cell).cast::<Header>(), *header) };
        cell
    }
}

const _: () = assert!(core::mem::size_of::<Cell>() == 128);
const _: () = assert!(core::mem::size_of::<RuleCell>() == 128);
const _: () = assert!(core::mem::size_of::<Header>() == 128);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    /// The plain definition the check form must agree with.
    fn plain(lo: &[u32; RANGE_WORDS], hi: &[u32; RANGE_WORDS], key: &[u32; KEY_WORDS]) -> bool {
        (0..RANGE_WORDS).all(|i| lo[i] <= key[i] && key[i] <= hi[i])
    }

    #[test]
    fn check_form_agrees_at_every_lane_boundary() {
        // For each range word: bounds at the edges of the word's width, keys
        // around each bound; every other word left at its own edge values.
        for w in 0..RANGE_WORDS {
            let max = if WORD_BITS[w] == 32 {
                u32::MAX
            } else {
                (1 << WORD_BITS[w]) - 1
            };
            let bounds = [
                (0, 0),
                (0, max),
                (1, max),
                (0, max - 1),
                (max, max),
                (3, 5),
                (5, 3),
            ];
            for (l, h) in bounds {
                let (mut lo, mut hi) = ([0; RANGE_WORDS], [u32::MAX; RANGE_WORDS]);
                lo[w] = l;
                hi[w] = h;
                let cell = RuleCell::from_ranges(&lo, &hi, 0, 0, action::PASS, 0);
                // Keys always fit their word's width (`WORD_BITS`).
                for k in [0, 1, 2, 3, 4, 5, 6, max - 1, max]
                    .into_iter()
                    .filter(|k| *k <= max)
                {
                    for (other, family) in [(0, 4), (1, 4), (0, 6), (1, 6)] {
                        // Keys as the parser makes them: every word within its
                        // width, family 4 or 6, IPv4 keys with zeros in
                        // address words 1–3.
                        let high = |i: usize| ADDR_WORDS[2..].contains(&i);
                        if (family == 4 && high(w)) || (w == word::FAMILY && other == 1) {
                            continue;
                        }
                        let mut key = [other; KEY_WORDS];
                        key[word::TCP_FLAGS] = 0;
                        key[word::FAMILY] = family;
                        for (i, v) in key.iter_mut().enumerate() {
                            if family == 4 && high(i) {
                                *v = 0;
                            }
                        }
                        key[w] = k;
                        let want = plain(&lo, &hi, &key);
                        let check = CheckKey::of(&key);
                        let ctx =
                            format!("word {w} [{l}, {h}] key {k} others {other} family {family}");
                        assert_eq!(cell.matches(&check), want, "{ctx}");
                        if family == 4 {
                            assert_eq!(cell.matches_family::<false>(&check), want, "{ctx} (IPv4)");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn high_words_are_skipped_only_where_they_cannot_decide() {
        // Rules: family lane × one range on an upper address word; keys: both
        // families, the upper word at values around the range.
        let families = [(4, 4), (6, 6), (0, 7), (5, 6), (4, 6)];
        let ranges = [(0, u32::MAX), (0, 0), (1, 5), (0, 5), (5, u32::MAX)];
        for &w in &ADDR_WORDS[2..] {
            for (fl, fh) in families {
                for (l, h) in ranges {
                    let (mut lo, mut hi) = ([0; RANGE_WORDS], [u32::MAX; RANGE_WORDS]);
                    (lo[word::FAMILY], hi[word::FAMILY]) = (fl, fh);
                    (lo[w], hi[w]) = (l, h);
                    let cell = RuleCell::from_ranges(&lo, &hi, 0, 0, action::PASS, 0);
                    let full = (l, h) == (0, u32::MAX);
                    assert_eq!(
                        cell.shape & RuleCell::HIGH_WORDS != 0,
                        fl <= 6 && 6 <= fh && !full || (l > 0 && fh >= 6),
                        "word {w} family [{fl}, {fh}] range [{l}, {h}]"
                    );
                    for family in [4, 6] {
                        for v in [0, 1, 3, 5, 6, u32::MAX] {
                            if family == 4 && v != 0 {
                                continue; // IPv4 keys have zeros there
                            }
                            let mut key = [0; KEY_WORDS];
                            key[word::FAMILY] = family;
                            key[word::VLAN] = VLAN_NONE;
                            key[w] = v;
                            let ctx =
                                format!("word {w} family [{fl}, {fh}] [{l}, {h}] key {family}/{v}");
                            assert_eq!(
                                cell.matches(&CheckKey::of(&key)),
                                plain(&lo, &hi, &key),
                                "{ctx}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn flags_and_impossible_rules() {
        let (lo, hi) = ([0; RANGE_WORDS], [u32::MAX; RANGE_WORDS]);
        let syn = RuleCell::from_ranges(&lo, &hi, 0x12, 0x02, action::DROP, 1);
        let mut key = [0; KEY_WORDS];
        for f in 0..=255u32 {
            key[word::TCP_FLAGS] = f;
            assert_eq!(syn.matches(&CheckKey::of(&key)), f & 0x12 == 0x02);
        }
        let never = RuleCell::from_ranges(&lo, &hi, 0x02, 0x04, action::DROP, 1);
        let mut lo_above = lo;
        lo_above[word::PROTO] = 300; // above the 8-bit lane: no key reaches it
        let above = RuleCell::from_ranges(&lo_above, &hi, 0, 0, action::DROP, 1);
        for f in 0..=255u32 {
            key[word::TCP_FLAGS] = f;
            key[word::PROTO] = f;
            assert!(!never.matches(&CheckKey::of(&key)));
            assert!(!above.matches(&CheckKey::of(&key)));
        }
    }
}
