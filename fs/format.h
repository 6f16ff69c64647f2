// fs/format.h: the on-media format, version 1. docs/format.md is the prose spec; this
// header is the law. All integers are little-endian; every struct is pinned by size and
// offset asserts. On-media types are named Disk*; the in-memory ones live elsewhere.
// No code outside fs/ depends on this header except the tools.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace pmemfuse::fs {

static_assert(std::endian::native == std::endian::little, "format is little-endian");

inline constexpr uint64_t kBlockSize = 4096;  // bytes; == page size
inline constexpr uint32_t kBlockShift = 12;
inline constexpr uint64_t kSuperMagic = 0x3145535546454d50ull;  // "PMEFUSE1"
inline constexpr uint32_t kFormatVersion = 1;

// Feature policy: an unknown incompat bit refuses the mount; an unknown ro_compat bit
// allows a read-only mount only; unknown compat bits are ignored. v1 defines none.
inline constexpr uint32_t kCompatKnown = 0;
inline constexpr uint32_t kRoCompatKnown = 0;
inline constexpr uint32_t kIncompatKnown = 0;

inline constexpr uint32_t kStateClean = 1;    // unmounted cleanly; journal empty
inline constexpr uint32_t kStateMounted = 2;  // in use, or the daemon stopped without unmounting
// The journal is scanned at every mount whatever the state says; the state tells fsck
// and the operator whether the last unmount was clean.

// Block magics (first 4 bytes of every metadata block).
inline constexpr uint32_t kJournalMagic = 0x4c4e524a;   // "JRNL"
inline constexpr uint32_t kTxMagic = 0x4e585854;        // "TXXN"
inline constexpr uint32_t kBitmapMagic = 0x50414d42;    // "BMAP"
inline constexpr uint32_t kItableMagic = 0x58444e49;    // "INDX"
inline constexpr uint32_t kDirMagic = 0x4b4c4244;       // "DBLK"
inline constexpr uint32_t kLeafMagic = 0x46414c45;      // "ELAF"
inline constexpr uint32_t kXattrMagic = 0x52545841;     // "AXTR"

// Block 0 holds the primary superblock, the last block of the device the backup.
struct DiskSuper {
  uint64_t magic;             // kSuperMagic
  uint32_t crc;               // crc32c of this struct with crc = 0
  uint32_t version;           // kFormatVersion
  uint32_t block_size;        // bytes; must equal kBlockSize
  uint32_t compat;            // feature bits, see policy above
  uint32_t ro_compat;
  uint32_t incompat;
  uint64_t block_count;       // blocks in the filesystem (device size / kBlockSize)
  uint64_t journal_start;     // block; journal header, then the log
  uint64_t journal_blocks;    // blocks, header included
  uint64_t bitmap_start;      // block; free-space bitmap, one bit per block
  uint64_t bitmap_blocks;
  uint64_t itable_index;      // block holding DiskItableIndex
  uint64_t backup_block;      // block of the backup superblock
  uint32_t chunk_blocks;      // blocks per inode-table chunk (its bitmap block included)
  uint32_t inodes_per_chunk;  // inode slots per chunk
  uint64_t root_ino;          // inode number of the root directory
  uint64_t orphan_start;      // block; orphan table (inodes to finish at mount)
  uint64_t devdax_align;      // bytes; mapping alignment the device needs (4096: none)
  int64_t mkfs_time_ns;       // ns since the epoch
  uint32_t state;             // kStateClean or kStateMounted
  uint32_t mount_count;       // mounts since mkfs
  uint8_t uuid[16];
  char label[32];             // NUL-padded
  uint64_t orphan_blocks;     // blocks of the orphan table
  uint8_t reserved[64];
};
static_assert(sizeof(DiskSuper) == 256);
static_assert(offsetof(DiskSuper, crc) == 8);
static_assert(offsetof(DiskSuper, block_count) == 32);
static_assert(offsetof(DiskSuper, orphan_start) == 104);
static_assert(offsetof(DiskSuper, orphan_blocks) == 184);
static_assert(offsetof(DiskSuper, state) == 128);
static_assert(offsetof(DiskSuper, uuid) == 136);

// Journal header: first block of the journal, two copies (slot 0 at offset 0, slot 1 at
// offset 64); the valid one with the higher checkpoint count wins, so a torn header write
// never loses the log position.
struct DiskJournalHeader {
  uint32_t magic;             // kJournalMagic
  uint32_t crc;               // crc32c with crc = 0
  uint64_t checkpoints;       // bumped on every header write; picks the newer slot
  uint64_t head_lsn;          // log byte offset of the oldest transaction to replay
  uint64_t head_seq;          // sequence number expected at head_lsn
  uint64_t log_bytes;         // size of the log area (journal_blocks - 1 blocks)
  uint8_t reserved[24];
};
static_assert(sizeof(DiskJournalHeader) == 64);

// A committed transaction in the log: header, then records. The log is a byte stream of
// log sequence numbers (lsn); lsn % log_bytes is the position in the log area, and a
// transaction may wrap around its end. crc covers header (crc = 0) and body, so a torn
// commit is never replayed.
struct DiskTxHeader {
  uint32_t magic;             // kTxMagic
  uint32_t crc;
  uint64_t seq;               // consecutive from the journal header's head_seq
  uint64_t lsn;               // where this header starts; rejects stale laps
  uint32_t body_bytes;        // records that follow
  uint32_t nrecords;
};
static_assert(sizeof(DiskTxHeader) == 32);

enum class RecKind : uint16_t {
  kBytes = 1,      // payload copied to dest
  kSetBits = 2,    // payload {first, count}: set bits in the bitmap starting at block dest
  kClearBits = 3,  // same, clear
};

struct DiskTxRecord {
  uint64_t dest;              // bytes from the device start (kBytes) or bitmap block (bits)
  uint32_t len;               // payload bytes (kBytes) or 16 (bit records)
  uint16_t kind;              // RecKind
  uint16_t reserved;
};  // followed by len bytes of payload, padded to 8
static_assert(sizeof(DiskTxRecord) == 16);

// Bitmap blocks (free-space bitmap and each inode chunk's slot bitmap): a header then
// kBitsPerBitmapBlock bits; bit i of the bitmap lives in block i / kBitsPerBitmapBlock.
struct DiskBitmapHeader {
  uint32_t magic;             // kBitmapMagic
  uint32_t crc;               // crc32c of the whole block with crc = 0
  uint64_t index;             // which block of its bitmap this is
  uint8_t reserved[48];
};
static_assert(sizeof(DiskBitmapHeader) == 64);
inline constexpr uint64_t kBitmapBytesPerBlock = kBlockSize - sizeof(DiskBitmapHeader);
inline constexpr uint64_t kBitsPerBitmapBlock = kBitmapBytesPerBlock * 8;

// The inode table: chunks of chunk_blocks contiguous blocks. A chunk's first block is its
// slot bitmap (set = in use), the rest hold inodes. Inode number n (n >= 1) lives in chunk
// (n - 1) / inodes_per_chunk, slot (n - 1) % inodes_per_chunk.
inline constexpr uint32_t kChunkBlocks = 512;  // 2 MiB
inline constexpr uint32_t kInodeSize = 256;
inline constexpr uint32_t kInodesPerBlock = kBlockSize / kInodeSize;
inline constexpr uint32_t kInodesPerChunk = (kChunkBlocks - 1) * kInodesPerBlock;
inline constexpr uint32_t kMaxChunks = 510;

struct DiskItableIndex {
  uint32_t magic;             // kItableMagic
  uint32_t crc;               // crc32c of the block with crc = 0
  uint32_t nchunks;           // chunks in use
  uint32_t reserved;
  uint64_t chunks[kMaxChunks];  // first block of each chunk
};
static_assert(sizeof(DiskItableIndex) == kBlockSize);

struct DiskExtent {
  uint32_t lblk;              // first file block
  uint32_t len_flags;         // blocks in the low 31 bits; kExtentUnwritten in bit 31
  uint64_t pblk;              // first device block
};
static_assert(sizeof(DiskExtent) == 16);
inline constexpr uint32_t kExtentUnwritten = 1u << 31;
inline constexpr uint32_t kExtentMaxLen = kExtentUnwritten - 1;

inline constexpr uint32_t kInlineExtents = 6;
inline constexpr uint32_t kInlineBytes = kInlineExtents * sizeof(DiskExtent);  // 96
inline constexpr uint32_t kInlineXattrBytes = 40;

// Inode flags.
inline constexpr uint32_t kInodeDax = 1u << 0;         // DAX data path (FS_XFLAG_DAX)
inline constexpr uint32_t kInodeInlineData = 1u << 1;  // symlink target in map.data
inline constexpr uint32_t kInodeChained = 1u << 2;     // extents in a leaf chain
inline constexpr uint32_t kInodeOrphan = 1u << 3;      // in the orphan table
inline constexpr uint32_t kInodeFlagsKnown = 0xf;

struct DiskInode {
  uint32_t crc;               // crc32c of the inode with crc = 0
  uint32_t mode;              // S_IFMT type and permission bits; 0: free slot
  uint32_t uid;
  uint32_t gid;
  uint32_t nlink;
  uint32_t flags;             // kInode*
  uint32_t generation;        // bumped each time the slot is reused
  uint32_t rdev;              // device number of char/block nodes (Linux new encoding)
  uint64_t size;              // bytes
  uint64_t blocks;            // blocks owned: data, extent leaves, xattr block
  int64_t atime_ns;           // ns since the epoch
  int64_t mtime_ns;
  int64_t ctime_ns;
  int64_t btime_ns;
  uint64_t parent;            // directories: inode number of the parent
  uint64_t xattr_block;       // block of out-of-line xattrs; 0: none
  uint64_t orphan_slot;       // flags & kInodeOrphan: orphan table slot + 1
  uint64_t entries;           // directories: live entries (not "." or "..")
  uint16_t nextents;          // inline extents in map.extents; 0 when chained
  uint16_t xattr_inline_len;  // bytes used in xattr_inline
  uint32_t reserved;
  union {
    DiskExtent extents[kInlineExtents];  // flags & ~kInodeChained
    struct {
      uint64_t head;          // first leaf block
      uint64_t nleaves;
    } chain;                  // flags & kInodeChained
    char data[kInlineBytes];  // flags & kInodeInlineData: symlink target
  } map;
  uint8_t xattr_inline[kInlineXattrBytes];
};
static_assert(sizeof(DiskInode) == kInodeSize);
static_assert(offsetof(DiskInode, size) == 32);
static_assert(offsetof(DiskInode, parent) == 80);
static_assert(offsetof(DiskInode, nextents) == 112);
static_assert(offsetof(DiskInode, map) == 120);
static_assert(offsetof(DiskInode, xattr_inline) == 216);

// Extent leaf: part of a chain of leaves, each covering a key range of file blocks in
// order; the in-memory extent map is rebuilt from the chain when the inode is loaded.
inline constexpr uint32_t kLeafExtents = 254;
struct DiskExtentLeaf {
  uint32_t magic;             // kLeafMagic
  uint32_t crc;               // crc32c of the block with crc = 0
  uint64_t owner;             // inode number
  uint64_t next;              // next leaf block; 0: last
  uint32_t count;             // extents used
  uint32_t reserved;
  DiskExtent extents[kLeafExtents];  // sorted by lblk, non-overlapping
};
static_assert(sizeof(DiskExtentLeaf) == kBlockSize);

// Directory block: header, then variable-length records filling the block exactly. A
// record with ino 0 is free space. Entries never move, so a record's byte position is
// its stable readdir cookie.
struct DiskDirHeader {
  uint32_t magic;             // kDirMagic
  uint32_t crc;               // crc32c of the block with crc = 0
  uint64_t owner;             // inode number of the directory
  uint64_t lblk;              // this block's index in the directory
  uint64_t reserved;
};
static_assert(sizeof(DiskDirHeader) == 32);

struct __attribute__((packed)) DiskDirent {  // records start 8-aligned
  uint64_t ino;               // 0: free record
  uint16_t rec_len;           // bytes to the next record; multiple of 8
  uint8_t name_len;           // bytes of name, no NUL
  uint8_t type;               // DT_* of the target
};  // followed by the name
static_assert(sizeof(DiskDirent) == 12);
inline constexpr uint32_t kMaxNameLen = 255;

inline constexpr uint32_t dirent_size(uint32_t name_len) {
  return (sizeof(DiskDirent) + name_len + 7) & ~7u;
}

// Out-of-line xattr block; entries packed after the header. Inline xattrs use the same
// entry encoding in DiskInode::xattr_inline.
struct DiskXattrHeader {
  uint32_t magic;             // kXattrMagic
  uint32_t crc;               // crc32c of the block with crc = 0
  uint64_t owner;             // inode number
  uint32_t used;              // bytes of entries after the header
  uint32_t count;             // entries
  uint64_t reserved;
};
static_assert(sizeof(DiskXattrHeader) == 32);

struct DiskXattrEntry {
  uint8_t name_len;           // bytes of the full name ("user.foo")
  uint8_t reserved;
  uint16_t value_len;         // bytes
};  // followed by name, then value
static_assert(sizeof(DiskXattrEntry) == 4);
inline constexpr uint32_t kXattrBlockBytes = kBlockSize - sizeof(DiskXattrHeader);

// Orphan table: slots naming inodes whose blocks must be freed at the next mount if the
// daemon stops first: unlinked while open (nlink 0), or a truncate split over several
// transactions. A slot is all zeros when free.
struct DiskOrphanSlot {
  uint64_t ino;               // 0: free
  uint32_t crc;               // crc32c of {ino, slot index}
  uint32_t reserved;
};
static_assert(sizeof(DiskOrphanSlot) == 16);
inline constexpr uint64_t kOrphanSlotsPerBlock = kBlockSize / sizeof(DiskOrphanSlot);
inline constexpr uint64_t kOrphanBlocks = 64;  // 16384 slots

inline constexpr uint64_t kMinBlocks = 4096;       // 16 MiB
inline constexpr uint64_t kMaxFileBlocks = 1ull << 32;  // 16 TiB with u32 lblk

}  // namespace pmemfuse::fs
