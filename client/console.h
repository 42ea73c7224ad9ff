// Terminal output shared by the local and remote commands: a progress bar and the per-layer table.
#ifndef LOWBIT_CLIENT_CONSOLE_H_
#define LOWBIT_CLIENT_CONSOLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/job/report.h"

namespace lowbit::cli {

// Redraws one line on stderr when it is a terminal; silent otherwise (logs and pipes stay clean).
class ProgressBar {
 public:
  ProgressBar();
  void Update(int64_t done, int64_t total, const std::string& label);
  void Finish();

 private:
  const bool enabled_;
  bool drawn_ = false;
};

std::string LayerTableHeader();
std::string LayerTableRow(const LayerReport& layer);
std::string SummaryLine(const JobSummary& summary);
std::string EvaluationLine(const Evaluation& evaluation);

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_CONSOLE_H_
