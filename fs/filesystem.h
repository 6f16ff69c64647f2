// fs/filesystem.h: the filesystem facade. No FUSE types: calls take inode numbers and
// names and return Results; the daemon turns them into replies.
//
// Lookup-count contract: every call that returns an Attr for a directory entry (lookup,
// mknod, mkdir, symlink, link, and readdir with plus = true) adds one kernel reference to
// that inode; forget(ino, n) removes n. open() adds an open reference, release() removes
// it. The in-memory inode dies when both reach zero; its blocks are freed only when, in
// addition, nlink == 0. An inode unlinked while referenced sits in the orphan table, so a
// crash before its last release is finished at the next mount.
//
// Threading: all calls are thread-safe. Lock order: ns_mu_ (namespace changes) ->
// mm::CachedFile's lock (buffered data) -> Inode::mu -> icache_mu_ / orphan_mu_ /
// InodeTable / Space / the page cache's index (leaves) -> Journal. Writeback locks a
// file's pages only to take and return them, never while it holds Inode::mu. Several
// Inode::mu are held together only under ns_mu_: exclusively (in inode-number order) by
// namespace changes, or shared by readdirplus (directory, then one child at a time); data
// operations hold one Inode::mu and wait on nothing else, so neither can deadlock.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <thread>
#include <vector>

#include "fs/bmap.h"
#include "fs/dir.h"
#include "fs/format.h"
#include "fs/itable.h"
#include "fs/journal.h"
#include "fs/progress.h"
#include "fs/space.h"
#include "fs/xattr.h"
#include "mm/dax_window.h"
#include "mm/page_cache.h"
#include "mm/region.h"

namespace pmemfuse::fs {

inline constexpr uint32_t kMaxLinks = 65000;  // as ext4
inline constexpr uint32_t kMaxSymlinkLen = 4095;

struct Attr {
  uint64_t ino = 0;
  uint32_t generation = 0;
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t rdev = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;  // 4 KiB blocks
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  int64_t btime_ns = 0;
  bool dax = false;  // opens use the DAX data path
};

struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t umask = 0;  // applied here only on acl mounts, where the kernel leaves it to us
};

struct SetAttr {
  enum class Time { kKeep, kNow, kSet };
  std::optional<uint32_t> mode;  // permission bits; the type is kept
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<uint64_t> size;
  Time atime = Time::kKeep;
  Time mtime = Time::kKeep;
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
};

struct StatFs {
  uint64_t blocks = 0;
  uint64_t bfree = 0;
  uint64_t files = 0;
  uint64_t ffree = 0;
};

struct XattrFlags {
  bool create = false;   // fail with kExists if present
  bool replace = false;  // fail with kNoData if absent
};

// Which files use the DAX data path, as ext4's and XFS's dax= mount option.
enum class DaxMode {
  kInode,   // files whose DAX flag (FS_XFLAG_DAX) is set
  kAlways,  // every regular file
  kNever,   // none; the flags are kept (and inherited) for later mounts
};

// When a read moves atime, as the mount(8) options of the same names.
enum class AtimeMode {
  kRelative,  // relatime: when atime is not newer than mtime or ctime, or a day old
  kStrict,    // strictatime: at every access
  kNever,     // noatime
};

struct MountOptions {
  bool read_only = false;
  bool acl = false;  // store POSIX ACLs and keep them consistent with modes
  AtimeMode atime = AtimeMode::kRelative;
  bool dir_atime = true;  // false: nodiratime, directories keep their atime
  // DRAM write-back cache for file data (pages of 4 KiB); 0: reads and writes go
  // straight to pmem.
  uint64_t cache_pages = 0;
  // Dirty pages older than this are written back; 0: only on fsync, sync, memory
  // pressure and unmount.
  uint64_t flush_interval_ms = 5000;
  // The kernel keeps mtime and sends it with setattr (its writeback cache): writes leave
  // mtime alone.
  bool kernel_times = false;
  DaxMode dax = DaxMode::kInode;
  // Address space for DAX windows (2 MiB slots) that give DAX reads a contiguous view of
  // a fragmented range; 0: none, reads use the extents one by one.
  uint64_t dax_window_bytes = 0;
  Progress progress;  // the free-space scan, which takes seconds on large devices
};

struct DaxState {
  bool flag = false;       // the inode's DAX flag, inherited from its directory at creation
  bool effective = false;  // files: opens use DAX; directories: files created in it will
};

struct FsInfo {
  bool read_only = false;
  uint64_t replayed = 0;         // journal transactions replayed at mount
  uint64_t orphans_reclaimed = 0;  // orphans finished at mount
  std::atomic<uint64_t> orphans_untracked{0};  // unlinked while the orphan table was full
  std::atomic<uint64_t> writeback_errors{0};   // background writebacks that failed (retried)
};

class Filesystem {
 public:
  static Result<std::unique_ptr<Filesystem>> mount(mm::Region region, const MountOptions& o);
  ~Filesystem();
  // Writes dirty inodes and marks the image clean. Called by the destructor if needed.
  Status unmount();
  const FsInfo& info() const { return info_; }
  // Writes every dirty cached page back to pmem (what syncfs would ask for).
  Status sync();
  // Starts the flusher thread (age and memory-pressure writeback). Separate from mount
  // because a daemon forks after mounting; until it runs, memory pressure makes the
  // waiting writer write back itself.
  void start_writeback();
  // Null without a cache.
  const mm::PageCache* cache() const { return cache_.get(); }
  const mm::Region& region() const { return region_; }
  JournalStats journal_stats() const { return journal_->stats(); }  // since mount

  Result<Attr> lookup(uint64_t parent, std::string_view name);
  void forget(uint64_t ino, uint64_t n);
  Result<Attr> getattr(uint64_t ino);
  Result<Attr> setattr(uint64_t ino, const SetAttr& s);

  Result<Attr> mknod(uint64_t parent, std::string_view name, uint32_t mode, uint32_t rdev,
                     const Caller& c);
  Result<Attr> mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c);
  Result<Attr> symlink(uint64_t parent, std::string_view name, std::string_view target,
                       const Caller& c);
  Result<Attr> link(uint64_t ino, uint64_t parent, std::string_view name);
  Status unlink(uint64_t parent, std::string_view name);
  Status rmdir(uint64_t parent, std::string_view name);
  // flags: 0, kRenameNoReplace or kRenameExchange.
  static constexpr uint32_t kRenameNoReplace = 1;
  static constexpr uint32_t kRenameExchange = 2;
  Status rename(uint64_t parent, std::string_view name, uint64_t newparent,
                std::string_view newname, uint32_t flags);
  Result<std::string> readlink(uint64_t ino);

  Status open(uint64_t ino);
  void release(uint64_t ino);
  // Calls sink once with the pieces of [off, off + size) clipped at EOF: pointers into
  // the media, and zeros for holes. The inode stays locked during the call.
  Status read(uint64_t ino, uint64_t off, uint64_t size,
              const std::function<void(const struct iovec*, int)>& sink);
  // With a cache, lands in DRAM and is written back later (fsync, sync, a timer, memory
  // pressure, unmount); else goes straight to pmem.
  Result<uint64_t> write(uint64_t ino, uint64_t off, const void* data, uint64_t size);
  // Returns once the file's data, size and times are durable.
  Status fsync(uint64_t ino, bool datasync);
  // fallocate(2) modes: 0 or kFallocKeepSize preallocate (unwritten extents);
  // kFallocPunchHole (with kFallocKeepSize) frees; kFallocZeroRange makes the range read as
  // zeros, keeping it allocated.
  static constexpr uint32_t kFallocKeepSize = 1;
  static constexpr uint32_t kFallocPunchHole = 2;
  static constexpr uint32_t kFallocZeroRange = 4;
  Status fallocate(uint64_t ino, uint32_t mode, uint64_t off, uint64_t len);
  // lseek(2) SEEK_DATA (hole = false) or SEEK_HOLE; unwritten extents count as holes.
  Result<uint64_t> seek_data(uint64_t ino, uint64_t off, bool hole);
  // After a read: moves atime as MountOptions::atime and dir_atime say.
  // True when it moved (the kernel's cached attributes are then stale).
  bool touch_atime(uint64_t ino);

  // Lists entries from cookie (0: start); "." and ".." come first. fn returns false when
  // it cannot take the entry (it is then not counted). With plus, attr is filled and a
  // kernel reference added for every entry other than "." and "..".
  using DirFiller = std::function<bool(std::string_view name, const Attr& attr, uint64_t next)>;
  Status readdir(uint64_t ino, uint64_t cookie, bool plus, const DirFiller& fn);

  Result<std::string> getxattr(uint64_t ino, std::string_view name);
  // trusted.* names are listed only when trusted (the caller has CAP_SYS_ADMIN).
  Result<std::vector<std::string>> listxattr(uint64_t ino, bool trusted);
  Status setxattr(uint64_t ino, std::string_view name, std::string_view value, XattrFlags f);
  Status removexattr(uint64_t ino, std::string_view name);

  Result<StatFs> statfs();

  // DAX (dax.cc).
  Result<DaxState> dax_state(uint64_t ino);
  // Sets or clears the DAX flag of a regular file or directory. When a file's data path
  // changes, its cached pages are written back and dropped first; returns whether it
  // changed (the kernel's cached pages of the file are then stale).
  Result<bool> set_dax(uint64_t ino, bool on);
  // Null when the mount has no DAX windows.
  const mm::DaxWindows* windows() const { return windows_.get(); }

 private:
  struct Inode {
    explicit Inode(uint64_t n) : ino(n) {}
    const uint64_t ino;
    std::shared_mutex mu;  // guards d, map, dir, times_dirty
    // Shared by every data operation, exclusive while the data path changes (DAX toggle):
    // no read or write is half on one path and half on the other.
    std::shared_mutex io_mu;
    std::atomic<bool> dax{false};  // the data path: DAX, else buffered; written under both locks
    // Time of the last DAX write that stored in place under a shared mu (so could not
    // write d); newer than d.mtime_ns when non-zero. Folded into d under an exclusive mu.
    std::atomic<int64_t> dax_mtime{0};
    DiskInode d{};
    ExtentMap map;
    std::unique_ptr<Directory> dir;
    bool times_dirty = false;
    uint64_t kernel_refs = 0;  // guarded by icache_mu_
    uint64_t opens = 0;        // guarded by icache_mu_
    bool dropping = false;     // guarded by icache_mu_
  };
  using InodeRef = std::shared_ptr<Inode>;
  struct Segment {  // a run of file blocks on media
    uint64_t lblk, len, pblk;
    bool fresh;     // newly allocated or unwritten: parts not written must be zeroed
    bool allocated;  // newly allocated by this write
  };

  Filesystem(mm::Region region, const DiskSuper& sb, const MountOptions& o, bool read_only);
  Status open_components();
  Status load_orphans();
  Status finish_orphans();

  // inode cache and lifetime (filesystem.cc)
  Result<InodeRef> get(uint64_t ino);
  void pin_kernel(const InodeRef& i);
  bool claim_unused(const InodeRef& i);
  void drop(const InodeRef& i);
  void maybe_drop(const InodeRef& i);
  Status reclaim_locked(Inode& i);
  Status flush_times_locked(Inode& i);
  Attr attr_of(const Inode& i) const;
  Status writable() const;
  int64_t now() const;
  void write_super(Tx& tx);
  void write_inode(Tx& tx, Inode& i);
  Status orphan_add(Tx& tx, Inode& i);
  void orphan_remove(Tx& tx, Inode& i);
  Status commit(Tx& tx);

  // namespace (namespace.cc)
  Result<Attr> create_node(uint64_t parent, std::string_view name, uint32_t mode, uint32_t rdev,
                           const Caller& c, std::string_view symlink_target);
  Status remove_entry(uint64_t parent, std::string_view name, bool want_dir);
  void drop_link_locked(Tx& tx, const InodeRef& victim);
  Status after_unlink(const InodeRef& victim);
  Result<bool> is_ancestor(uint64_t anc, uint64_t ino);
  Status store_symlink(Tx& tx, Inode& i, std::string_view target);

  // data (data.cc)
  // Stores bytes [file_off, file_off + n) of the data being written at device offset dev.
  using Source = std::function<void(uint64_t dev, uint64_t file_off, uint64_t n)>;
  Status read_media(Inode& i, uint64_t off, uint64_t size,
                    const std::function<void(const struct iovec*, int)>& sink);
  void media_iov(Inode& i, uint64_t off, uint64_t end, std::vector<struct iovec>* iov);
  Result<uint64_t> write_media(Inode& i, uint64_t off, const uint8_t* src, uint64_t size);
  bool overwrite_in_place(Inode& i, uint64_t off, const uint8_t* src, uint64_t size);
  void fold_times_locked(Inode& i);
  Result<std::vector<Segment>> map_for_write(Tx& tx, Inode& i, uint64_t lo, uint64_t hi,
                                             uint64_t* end, bool from_reserve);
  Result<uint64_t> write_locked(Inode& i, uint64_t off, uint64_t size, const Source& src,
                                int64_t mtime, bool from_reserve);
  Result<uint64_t> write_batch_locked(Inode& i, uint64_t off, uint64_t size, const Source& src,
                                      int64_t mtime, bool from_reserve);
  Status truncate_locked(Inode& i, uint64_t size, int64_t now);
  Status trim_locked(Inode& i, uint64_t from_lblk, Tx& first, bool keep_orphan);
  void zero_partial_blocks(Inode& i, uint64_t off, uint64_t end);
  void zero_past_eof(Inode& i);
  Status prealloc_locked(Inode& i, uint64_t lo, uint64_t hi, bool zero);
  Status punch_locked(Inode& i, uint64_t lo, uint64_t hi);
  Status store_acl(Tx& tx, Inode& i, std::vector<Xattr>& xs, std::string_view name, std::string_view value);
  Status inherit_acls(Tx& tx, Inode& parent, Inode& child, const Caller& c);
  Status chmod_acl_locked(Tx& tx, Inode& i);
  Status check_xattr_name(std::string_view name) const;
  Status rollback_locked(Inode& i, const DiskInode& saved);
  Result<uint64_t> logical_size(const InodeRef& i);

  // DAX path (dax.cc)
  bool dax_for(const DiskInode& d) const;
  Status read_dax(Inode& i, uint64_t off, uint64_t size,
                  const std::function<void(const struct iovec*, int)>& sink);
  Status switch_path(Inode& i, bool dax);
  void drop_windows(uint64_t ino, uint64_t from, uint64_t to);

  // buffered path (buffered.cc)
  mm::CachedFileRef cache_of(Inode& i);  // null for non-regular files or without a cache
  uint64_t page_on_media(Inode& i, uint64_t index, const uint8_t** data);
  Result<bool> fill_page(Inode& i, uint64_t index, uint8_t* buf);
  Status read_cached(Inode& i, mm::CachedFile& f, uint64_t off, uint64_t size,
                     const std::function<void(const struct iovec*, int)>& sink);
  Result<uint64_t> write_cached(Inode& i, mm::CachedFile& f, uint64_t off, const void* data,
                                uint64_t size);
  Status flush_file(mm::CachedFile& f);
  Status write_back(Inode& i, const mm::FlushBatch& b);
  void drop_cached(const InodeRef& i);
  void stop_flusher();
  void flusher_loop();
  void kick_flusher();
  void writeback_failed();

  mm::Region region_;
  DiskSuper sb_;      // guarded by ns_mu_ for writes after mount
  bool read_only_;
  MountOptions opts_;
  FsInfo info_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Space> space_;
  std::unique_ptr<InodeTable> itable_;
  std::atomic<bool> failed_{false};  // a commit failed: refuse all further changes
  bool unmounted_ = false;

  std::shared_mutex ns_mu_;  // exclusive for namespace changes; taken before any Inode::mu
  std::mutex icache_mu_;
  std::unordered_map<uint64_t, InodeRef> icache_;  // guarded by icache_mu_
  std::unique_ptr<mm::PageCache> cache_;
  std::unique_ptr<mm::DaxWindows> windows_;
  std::thread flusher_;
  std::mutex wb_mu_;  // a leaf
  std::condition_variable wb_cv_;
  bool wb_stop_ = false;  // guarded by wb_mu_
  bool wb_kick_ = false;  // guarded by wb_mu_
  std::mutex orphan_mu_;
  std::vector<uint64_t> free_orphan_slots_;  // guarded by orphan_mu_
  std::vector<std::pair<uint64_t, uint64_t>> orphans_at_mount_;  // {slot, ino}
};

// Writes a fresh filesystem on the region (mkfs).
struct MkfsOptions {
  std::string label;
  uint64_t journal_blocks = 0;  // 0: scaled to the device
  uint32_t root_uid = 0;
  uint32_t root_gid = 0;
  Progress progress;
};
Status mkfs(mm::Region& region, const MkfsOptions& o);

}  // namespace pmemfuse::fs
