#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "intercept/applier.h"
#include "intercept/plan.h"

struct nft_ctx;  // libnftables

namespace remora::intercept {

inline constexpr const char* kNftTable = "remora";  // family inet

// Renders the plans of every family as one nft script for the `inet remora` table: the table is
// created-then-deleted first (nft 1.0.6 has no "destroy"), then declared whole, so running the
// script through libnftables is one transaction that leaves exactly the plan. Each family's user
// chains get a "_v4"/"_v6" suffix; the base chains dispatch with `meta nfproto`. Each rule is
// written the way libnftables lists it back (see nftDifferences). The table's comment carries
// `fingerprint`, a hash of the rendered plan.
// Pure: errors name a planned rule the translation does not know (a planner bug).
Result<std::string> renderNftables(const std::vector<FamilyPlan>& plans,
                                   const std::string& fingerprint);

// What install would change: the differences between `listing` (libnftables' text listing of
// the table, `list table inet remora`, with or without handles; nullopt when the table is not
// there) and the table the plans render to, rule by rule and chain by chain. Empty when the
// installed table is exactly the plan. The translation writes each rule as libnftables lists
// it back, so equal text means equal rules. Errors as renderNftables.
Result<std::vector<std::string>> nftDifferences(const std::optional<std::string>& listing,
                                                const std::vector<FamilyPlan>& plans);

// A stable hash of the text (FNV-1a, hex), for the table comment.
std::string planFingerprint(const std::string& text);

// One libnftables context (the library, no nft process). run() executes a script or command as
// one transaction and returns the buffered output; errors carry the library's error text.
class NftContext {
 public:
  NftContext();
  // Out of line: the libnftables build frees its context (not so in the static CLI build).
  ~NftContext();  // NOLINT(performance-trivially-destructible)
  NftContext(const NftContext&) = delete;
  NftContext& operator=(const NftContext&) = delete;
  // `handles`: listings print each rule's handle (`nft -a`).
  Result<std::string> run(const std::string& commands, bool json = false, bool handles = false);

 private:
  // Unused in the static CLI build (REMORA_NFT_CLI), which runs the nft binary instead.
  [[maybe_unused]] ::nft_ctx* ctx_;
};

// The `family name` of every nftables table in the calling thread's netns ("ip kube-proxy").
Result<std::vector<std::string>> nftTables(NftContext& nft);

// For remora-init, called first in main. Each table in libnftables' cache carries four 128 KiB hash
// tables; glibc maps every one with mmap and unmaps it on free, so each listing and transaction
// faults its pages in anew, and page faults are most of an nftables install's time on a VM. Keeping
// freed memory in the heap lets later commands reuse the pages (docs/INTERCEPTION.md, "Install
// time").
void reuseFreedMemory();

// Lists one table (`family name`, "inet remora") as text; nullopt when it does not exist. This
// fills libnftables' cache for that table only, while `list tables` builds every table's cache:
// about 12 ms against 3 ms (0.1 ms for a missing table) with iptables-nft's four tables present.
Result<std::optional<std::string>> listNftTable(NftContext& nft, const std::string& table);

// Whether libnftables runs in this process. The static CNI plugin runs `nft` instead, so a
// listing there costs a process.
bool nftInProcess();

// Deletes the `inet remora` table when it exists. Returns whether it did.
Result<bool> removeNftablesTable(NftContext& nft);

std::unique_ptr<Applier> makeNftablesApplier(
    std::chrono::milliseconds command_timeout = kDefaultCommandTimeout);

}  // namespace remora::intercept
