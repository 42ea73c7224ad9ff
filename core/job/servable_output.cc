#include "core/job/servable_output.h"

#include "absl/strings/match.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::Status CopyServingFiles(ObjectStore* source, const QuantizeJobSpec& spec, OutputTransaction* output,
                              JobReport* report) {
  const std::string dir = CheckpointDirectory(spec.source_uri);
  for (const char* name : kServingFiles) {
    absl::StatusOr<std::string> bytes = source->ReadAll(JoinUri(dir, name));
    if (absl::IsNotFound(bytes.status())) continue;
    if (!bytes.ok()) return absl::Status(bytes.status().code(), absl::StrCat("copying ", name, ": ", bytes.status().message()));
    RETURN_IF_ERROR(output->WriteAll(name, *bytes, report));
  }
  if (absl::EndsWith(spec.tokenizer_uri, ".bin")) {
    ASSIGN_OR_RETURN(const std::string bytes, source->ReadAll(spec.tokenizer_uri));
    RETURN_IF_ERROR(output->WriteAll("tokenizer.bin", bytes, report));
  }
  return absl::OkStatus();
}

std::string ModelCard(const QuantizeJobSpec& spec, const JobReport& report, const nlohmann::json& qc) {
  const std::string method = report.config.value("method", "");
  const std::string format = report.config.value("format", "");
  const std::string name = CheckpointName(spec.source_uri);
  std::string settings;
  if (qc.contains("bits")) absl::StrAppend(&settings, qc["bits"].dump(), "-bit");
  if (qc.contains("group_size")) absl::StrAppend(&settings, " g", qc["group_size"].dump());
  std::string card = absl::StrCat("---\ntags:\n- lowbit\n- quantized\n- ", method, "\n- ", format, "\n---\n\n# ", name, " (",
                                  method, settings.empty() ? "" : " " + settings, ", ", format, " format)\n\n");
  absl::StrAppend(&card, "Quantized by lowbit ", LOWBIT_VERSION, " from `", report.source, "`.\n\n");
  absl::StrAppend(&card, "| | |\n|---|---|\n");
  absl::StrAppend(&card, "| method | ", method, " |\n| output format | ", format, " |\n");
  for (const char* key : {"gguf_type", "bits", "group_size", "sym", "desc_act", "damp_percent", "checkpoint_format", "zero_point", "version"}) {
    const bool gptq_only = std::string_view(key) == "desc_act" || std::string_view(key) == "damp_percent";
    if (qc.contains(key) && (!gptq_only || method == "gptq")) absl::StrAppend(&card, "| ", key, " | ", qc[key].dump(), " |\n");
  }
  const JobSummary& s = report.summary;
  absl::StrAppend(&card, absl::StrFormat("| layers quantized | %d of %d linear layers |\n", s.layers_quantized,
                                         s.layers_quantized + static_cast<int64_t>(report.kept.size())));
  absl::StrAppend(&card, absl::StrFormat("| bits per weight | %.3f over the quantized layers (every stored byte: codes, scales, zeros, g_idx) |\n",
                                         s.bits_per_weight));
  absl::StrAppend(&card, absl::StrFormat("| weight error | mean %.4f, max %.4f relative Frobenius |\n", s.mean_relative_error,
                                         s.max_relative_error));
  if (!spec.calibration.text_uri.empty() && Calibrates(spec)) {
    absl::StrAppend(&card, absl::StrFormat("| calibration | %d windows of %d tokens from `%s` |\n", spec.calibration.samples,
                                           spec.calibration.seqlen, spec.calibration.text_uri));
  }
  if (report.evaluation) {
    const Evaluation& e = *report.evaluation;
    absl::StrAppend(&card, absl::StrFormat("| evaluation | perplexity %.4f (source %.4f), KL to the source %.5f nats/token over %d tokens of `%s` |\n",
                                           e.perplexity, e.reference_perplexity, e.kl_divergence, e.tokens, e.text));
  }
  if (!report.kept.empty()) {
    absl::StrAppend(&card, "\nKept in FP16 (declared in the quantization config, so engines load them as plain layers):\n\n");
    for (const KeptLayer& k : report.kept) absl::StrAppend(&card, "- `", k.name, "`: ", k.reason, "\n");
  }
  absl::StrAppend(&card, "\n## Serving\n\n");
  if (format == "gptq") {
    absl::StrAppend(&card,
                    "- vLLM: `vllm serve ./", name, "` (gptq; gptq_marlin when sym is true and bits are 4 or 8)\n"
                    "- transformers (optimum + gptqmodel): `AutoModelForCausalLM.from_pretrained(\"./", name, "\", device_map=\"auto\")`\n"
                    "- GPTQModel: `GPTQModel.load(\"./", name, "\")`\n");
  } else if (format == "gguf") {
    absl::StrAppend(&card, "- llama.cpp: `llama-cli -m ./", name, "/model.gguf` (also `llama-server`, `llama-perplexity`)\n"
                           "- Ollama: a Modelfile with `FROM ./model.gguf`\n");
  } else if (format == "awq") {
    absl::StrAppend(&card, "- vLLM: `vllm serve ./", name, "` (awq; awq_marlin on GPUs that have it)\n"
                           "- transformers (autoawq): `AutoModelForCausalLM.from_pretrained(\"./", name, "\")`\n");
  } else {
    absl::StrAppend(&card, "lowbit's native layout (docs/native-format.md): `lowbit eval --model ./", name,
                    " --text TEXT` and `lowbit generate --model ./", name, "`.\n");
  }
  absl::StrAppend(&card, "\n`lowbit_report.json` holds every layer's bits, error and time.\n");
  return card;
}

}  // namespace lowbit
