// Task readers and lm-evaluation-harness prompts: real items from shared/fixtures/tasks, small
// hand-written files for the formats the fixtures lack, and malformed files (errors name file:line).
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "eval/hash.h"
#include "eval/tasks.h"
#include "test_util.h"

namespace llmprune {
namespace {
namespace fs = std::filesystem;

fs::path fixture_tasks() { return test::shared_dir() / "fixtures/tasks"; }

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// The UserError message of load_task, or "" when it loads.
std::string load_error(const std::string& task, const fs::path& dir) {
  try {
    load_task(task, dir);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(EvalTasks, PiqaFixture) {
  TaskData d = load_task("piqa", fixture_tasks());
  ASSERT_EQ(d.items.size(), 1838u);
  ASSERT_EQ(d.files.size(), 2u);
  const McItem& a = d.items[0];
  ASSERT_EQ(a.contexts.size(), 2u);
  EXPECT_EQ(a.contexts[0], "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
  EXPECT_EQ(a.contexts[1], a.contexts[0]);
  EXPECT_EQ(a.conts[0],
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will "
            "also need to supply it with a water bottle and a food dish.");
  EXPECT_EQ(a.gold, 0);
  const McItem& b = d.items[1];
  EXPECT_EQ(b.contexts[0], "Question: dresser\nAnswer:");
  EXPECT_EQ(b.conts[0], " replace drawer with bobby pin ");  // trailing space kept, as lm-eval
  EXPECT_EQ(b.conts[1], " finish, woodgrain with  bobby pin ");
  EXPECT_EQ(b.choices[0], "replace drawer with bobby pin ");  // acc_norm length: 30 characters
  EXPECT_EQ(b.gold, 1);
  EXPECT_NE(a.where.find("valid.jsonl:1"), std::string::npos);
}

TEST(EvalTasks, ArcEasyFixture) {
  TaskData d = load_task("arc_easy", fixture_tasks());
  ASSERT_EQ(d.items.size(), 2376u);
  const McItem& a = d.items[0];
  EXPECT_EQ(a.contexts[0], "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:");
  ASSERT_EQ(a.conts.size(), 4u);
  EXPECT_EQ(a.conts[0], " Sunlight is the source of energy for nearly all ecosystems.");
  EXPECT_EQ(a.conts[3], " The producers in all ecosystems are plants.");
  EXPECT_EQ(a.gold, 0);
  // Numeric labels 1-4: answerKey "2" is the second choice.
  const McItem& n = d.items[14];
  EXPECT_EQ(n.contexts[0], "Question: All living and nonliving material is composed of\nAnswer:");
  EXPECT_EQ(n.conts[1], " elements");
  EXPECT_EQ(n.gold, 1);
  // Five choices A-E.
  const McItem& e = d.items[500];
  ASSERT_EQ(e.conts.size(), 5u);
  EXPECT_EQ(e.conts[4], " water vapor");
  EXPECT_EQ(e.gold, 1);
}

TEST(EvalTasks, OpenBookQaTsvFixture) {
  TaskData d = load_task("openbookqa", fixture_tasks());
  ASSERT_EQ(d.items.size(), 500u);
  EXPECT_EQ(d.files.at(0).filename(), "test.tsv");
  const McItem& a = d.items[0];
  // lm-eval: the question stem alone is the context.
  EXPECT_EQ(a.contexts[0],
            "A person wants to start saving money so that they can afford a nice vacation at the end of the year. After "
            "looking over their budget and expenses, they decide the best way to save money is to");
  ASSERT_EQ(a.conts.size(), 4u);
  EXPECT_EQ(a.conts[0], " make more phone calls");
  EXPECT_EQ(a.conts[1], " quit eating lunch out");
  EXPECT_EQ(a.conts[2], " buy less with monopoly money");
  EXPECT_EQ(a.conts[3], " have lunch with friends");
  EXPECT_EQ(a.gold, 1);
  EXPECT_EQ(d.items[1].contexts[0], "There is most likely going to be fog around:");
  EXPECT_EQ(d.items[1].conts[0], " a marsh");
  EXPECT_EQ(d.items[1].gold, 0);
  EXPECT_NE(a.where.find("test.tsv:2"), std::string::npos);  // line 1 is the header
}

TEST(EvalTasks, BoolqSuperGlueFixture) {
  TaskData d = load_task("boolq", fixture_tasks());
  ASSERT_EQ(d.items.size(), 3270u);
  const McItem& a = d.items[0];
  const std::string& c = a.contexts[0];
  EXPECT_EQ(c.rfind("Ethanol fuel -- All biomass goes through at least some of these steps:", 0), 0u);
  const std::string tail =
      " from corn uses much less petroleum than producing gasoline.\nQuestion: does ethanol take more energy make that "
      "produces?\nAnswer:";
  ASSERT_GE(c.size(), tail.size());
  EXPECT_EQ(c.substr(c.size() - tail.size()), tail);
  EXPECT_EQ(c.size(), 1384u + std::string("\nQuestion: does ethanol take more energy make that produces?\nAnswer:").size());
  EXPECT_EQ(a.conts, (std::vector<std::string>{" no", " yes"}));
  EXPECT_EQ(a.gold, 0);  // label "false" (a string in SuperGLUE's file)
}

TEST(EvalTasks, WinograndeConvertedFixture) {
  TaskData d = load_task("winogrande", fixture_tasks());
  ASSERT_EQ(d.items.size(), 1267u);
  ASSERT_EQ(d.files.size(), 2u);  // winogrande.jsonl + dev-labels.lst (cross-checked)
  const McItem& a = d.items[0];
  EXPECT_EQ(a.contexts, (std::vector<std::string>{"Sarah was a much better surgeon than Maria so Sarah",
                                                  "Sarah was a much better surgeon than Maria so Maria"}));
  EXPECT_EQ(a.conts, (std::vector<std::string>{" always got the easier cases.", " always got the easier cases."}));
  EXPECT_EQ(a.gold, 1);
  EXPECT_EQ(d.items[1].gold, 0);
  EXPECT_EQ(d.items[2].conts[0], " was't ruined.");
}

TEST(EvalTasks, KjvClozeFixture) {
  TaskData d = load_task("kjv_cloze", fixture_tasks());
  ASSERT_EQ(d.items.size(), 500u);
  const McItem& a = d.items[0];
  EXPECT_EQ(a.contexts[0],
            "And there was a row of building round about in them, round about them four, and it was made with boiling "
            "places under");
  // Appended as is: the choices carry their own leading space; acc_norm counts it.
  EXPECT_EQ(a.conts, (std::vector<std::string>{" Philistine, and killed", " the rows round", " of men? answer",
                                               " pulled up out"}));
  EXPECT_EQ(a.choices, a.conts);
  EXPECT_EQ(a.gold, 1);
}

TEST(EvalTasks, HellaswagHandWritten) {
  auto dir = test::temp_dir("tasks");
  // The first HellaSwag validation item, and a WikiHow-style one exercising the preprocessing.
  write(dir / "hellaswag/hellaswag_val.jsonl",
        R"({"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY"})"
        "\n"
        R"({"activity_label": "Home and Garden", "ctx_a": "[header] How to make tea.  [title] Boil   water. [step] Use a [kettle\n] or pot.", "ctx_b": "tHE WATER should bubble  ", "label": "1", "endings": ["  [substeps] Pour the water [into a cup].  ", "Wait  for it [title] then drink"]})"
        "\n");
  TaskData d = load_task("hellaswag", dir);
  ASSERT_EQ(d.items.size(), 2u);
  const McItem& a = d.items[0];
  EXPECT_EQ(a.contexts[0], "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(a.conts[3], " starts pulling up roofing on a roof.");
  EXPECT_EQ(a.choices[3], "starts pulling up roofing on a roof.");
  EXPECT_EQ(a.gold, 3);
  // Expected strings produced by lm-eval's preprocess() in Python.
  const McItem& b = d.items[1];
  EXPECT_EQ(b.contexts[0], "Home and Garden: How to make tea. . Boil  water. Use a [kettle\n] or pot. The water should bubble");
  EXPECT_EQ(b.conts[0], "  Pour the water .");  // preprocess leaves the space after "[substeps]"
  EXPECT_EQ(b.conts[1], " Wait for it. then drink");
  EXPECT_EQ(b.gold, 1);
}

TEST(EvalTasks, ArcChallengeHandWritten) {
  auto dir = test::temp_dir("tasks");
  write(dir / "arc/ARC-Challenge-Test.jsonl",
        R"({"id":"x1","question":{"stem":"Which is a mineral?","choices":[{"text":"quartz","label":"1"},{"text":"wood","label":"2"},{"text":"bone","label":"3"}]},"answerKey":"1"})"
        "\n\n"  // a blank line is skipped
        R"({"id":"x2","question":{"stem":"Pick E.","choices":[{"text":"a","label":"A"},{"text":"b","label":"B"},{"text":"c","label":"C"},{"text":"d","label":"D"},{"text":"e","label":"E"}]},"answerKey":"E"})"
        "\n");
  TaskData d = load_task("arc_challenge", dir);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.info.paper_metric, "acc_norm");
  EXPECT_EQ(d.items[0].contexts[0], "Question: Which is a mineral?\nAnswer:");
  EXPECT_EQ(d.items[0].conts, (std::vector<std::string>{" quartz", " wood", " bone"}));
  EXPECT_EQ(d.items[0].gold, 0);
  EXPECT_EQ(d.items[1].gold, 4);
  EXPECT_NE(d.items[1].where.find("ARC-Challenge-Test.jsonl:3"), std::string::npos);
}

TEST(EvalTasks, OpenBookQaJsonlPreferred) {
  auto dir = test::temp_dir("tasks");
  write(dir / "openbookqa/test.tsv", "garbage\n");
  write(dir / "openbookqa/test.jsonl",
        R"({"id":"7-980","question":{"stem":"The sun is responsible for","choices":[{"text":"puppies learning new tricks","label":"A"},{"text":"plants sprouting, blooming and wilting","label":"D"}]},"answerKey":" D"})"
        "\n");
  TaskData d = load_task("openbookqa", dir);
  ASSERT_EQ(d.items.size(), 1u);
  EXPECT_EQ(d.items[0].contexts[0], "The sun is responsible for");
  EXPECT_EQ(d.items[0].conts[1], " plants sprouting, blooming and wilting");
  EXPECT_EQ(d.items[0].gold, 1);  // answerKey.lstrip()
}

TEST(EvalTasks, BoolqGoogleDevHandWritten) {
  auto dir = test::temp_dir("tasks");
  write(dir / "boolq/dev.jsonl",
        R"({"question": "is the sky blue", "title": "Sky", "answer": true, "passage": "The sky is blue by day."})"
        "\n"
        R"({"question": "is ice hot", "answer": false, "passage": "Ice is cold."})"
        "\n");
  TaskData d = load_task("boolq", dir);
  ASSERT_EQ(d.items.size(), 2u);
  // SuperGLUE's passage field (what lm-eval reads) is Google's "title -- passage".
  EXPECT_EQ(d.items[0].contexts[0], "Sky -- The sky is blue by day.\nQuestion: is the sky blue?\nAnswer:");
  EXPECT_EQ(d.items[0].gold, 1);
  EXPECT_EQ(d.items[1].contexts[0], "Ice is cold.\nQuestion: is ice hot?\nAnswer:");
  EXPECT_EQ(d.items[1].gold, 0);
}

TEST(EvalTasks, WinograndeOriginalHandWritten) {
  auto dir = test::temp_dir("tasks");
  write(dir / "winogrande/dev.jsonl",
        R"({"qID": "a-1", "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.", "option1": "Sarah", "option2": "Maria", "answer": "2"})"
        "\n"
        R"({"qID": "a-2", "sentence": "_ liked the cake.", "option1": "Tom", "option2": "Ann", "answer": "1"})"
        "\n");
  write(dir / "winogrande/dev-labels.lst", "2\n1\n");
  TaskData d = load_task("winogrande", dir);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[0].contexts, (std::vector<std::string>{"Sarah was a much better surgeon than Maria so Sarah",
                                                           "Sarah was a much better surgeon than Maria so Maria"}));
  EXPECT_EQ(d.items[0].conts[0], " always got the easier cases.");
  EXPECT_EQ(d.items[0].gold, 1);
  EXPECT_EQ(d.items[1].contexts, (std::vector<std::string>{"Tom", "Ann"}));
  EXPECT_EQ(d.items[1].conts[1], " liked the cake.");
  EXPECT_EQ(d.items[1].gold, 0);
  // Labels that disagree with the answers are refused.
  write(dir / "winogrande/dev-labels.lst", "2\n2\n");
  EXPECT_NE(load_error("winogrande", dir).find("dev-labels.lst: label 2 of item 2 disagrees"), std::string::npos);
}

TEST(EvalTasks, MalformedFilesNameFileAndLine) {
  auto dir = test::temp_dir("tasks");
  auto piqa = dir / "piqa";
  const std::string ok = R"({"goal": "g", "sol1": "a", "sol2": "b"})";
  write(piqa / "valid.jsonl", ok + "\n" + ok + "\n{\"goal\": \"g\", \"sol1\": \"a\"\n");
  write(piqa / "valid-labels.lst", "0\n1\n0\n");
  std::string e = load_error("piqa", dir);
  EXPECT_NE(e.find("piqa/valid.jsonl:3: invalid JSON"), std::string::npos) << e;

  write(piqa / "valid.jsonl", ok + "\n" + R"({"goal": "g", "sol1": "a"})" + "\n" + ok + "\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid.jsonl:2: missing field \"sol2\""), std::string::npos) << e;

  write(piqa / "valid.jsonl", ok + "\n" + R"({"goal": 5, "sol1": "a", "sol2": "b"})" + "\n" + ok + "\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid.jsonl:2: field \"goal\" must be a string"), std::string::npos) << e;

  write(piqa / "valid.jsonl", ok + "\n" + ok + "\n" + ok + "\n");
  write(piqa / "valid-labels.lst", "0\n2\n0\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid-labels.lst:2: label must be 0 or 1, got \"2\""), std::string::npos) << e;

  write(piqa / "valid-labels.lst", "0\n1\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid-labels.lst:3: only 2 labels for the 3 items of"), std::string::npos) << e;

  write(piqa / "valid-labels.lst", "0\n1\n1\n0\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid-labels.lst:4: more labels than the 3 items"), std::string::npos) << e;

  write(piqa / "valid.jsonl", "");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid.jsonl:1: file is empty"), std::string::npos) << e;

  write(piqa / "valid.jsonl", "[1, 2]\n");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("valid.jsonl:1: expected a JSON object"), std::string::npos) << e;

  fs::remove(piqa / "valid-labels.lst");
  e = load_error("piqa", dir);
  EXPECT_NE(e.find("task file " + (piqa / "valid-labels.lst").string() + " not found"), std::string::npos) << e;

  e = load_error("hellaswag", dir);
  EXPECT_NE(e.find("task folder " + (dir / "hellaswag").string() + " not found"), std::string::npos) << e;

  EXPECT_NE(load_error("mmlu", dir).find("unknown task \"mmlu\""), std::string::npos);

  // ARC: answer key not among the labels; gold out of range in the generic format.
  write(dir / "arc/ARC-Easy-Test.jsonl",
        R"({"question":{"stem":"s","choices":[{"text":"a","label":"A"},{"text":"b","label":"B"}]},"answerKey":"C"})"
        "\n");
  e = load_error("arc_easy", dir);
  EXPECT_NE(e.find("ARC-Easy-Test.jsonl:1: answerKey \"C\" is not one of the choice labels A,B"), std::string::npos) << e;
  write(dir / "arc/ARC-Easy-Test.jsonl", R"({"question":{"stem":"s","choices":[{"text":"a"}]},"answerKey":"A"})" "\n");
  e = load_error("arc_easy", dir);
  EXPECT_NE(e.find("ARC-Easy-Test.jsonl:1: field \"question.choices\" must be an array of at least 2"), std::string::npos) << e;
  write(dir / "kjv-cloze/test.jsonl", R"({"query":"q","choices":[" a"," b"],"gold":1})" "\n" R"({"query":"q","choices":[" a"," b"],"gold":2})" "\n");
  e = load_error("kjv_cloze", dir);
  EXPECT_NE(e.find("test.jsonl:2: field \"gold\" = 2 is out of range for 2 choices"), std::string::npos) << e;

  // BoolQ label that is not a boolean; WinoGrande sentence without a blank; OBQA bad TSV row.
  write(dir / "boolq/val.jsonl", R"({"question":"q","passage":"p","idx":0,"label":"maybe"})" "\n");
  e = load_error("boolq", dir);
  EXPECT_NE(e.find("val.jsonl:1: field \"label\" must be true or false"), std::string::npos) << e;
  write(dir / "winogrande/dev.jsonl", R"({"sentence":"no blank","option1":"a","option2":"b","answer":"1"})" "\n");
  e = load_error("winogrande", dir);
  EXPECT_NE(e.find("dev.jsonl:1: field \"sentence\" has no \"_\" blank"), std::string::npos) << e;
  write(dir / "openbookqa/test.tsv",
        "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n1\tQ?\t(A) x (B) y\tQ? (A) x (B) y\tA\n2\tQ?\t(A) x\n");
  e = load_error("openbookqa", dir);
  EXPECT_NE(e.find("test.tsv:3: expected 5 tab-separated fields, got 3"), std::string::npos) << e;
}

TEST(EvalTasks, PythonStringSemantics) {
  EXPECT_EQ(py_strip(" \t\n a b \xC2\xA0\r\n"), "a b");  // U+00A0 is whitespace to Python
  EXPECT_EQ(py_rstrip("  x  "), "  x");
  EXPECT_EQ(py_strip("   "), "");
  EXPECT_EQ(py_capitalize("tHE WATER"), "The water");
  EXPECT_EQ(py_capitalize("\xC3\xA9" "COLE \xC3\x89t\xC3\xA9"), "\xC3\x89" "cole \xC3\xA9t\xC3\xA9");  // "École été"
  EXPECT_EQ(py_capitalize(""), "");
  EXPECT_EQ(utf8_length("\xC3\xA9t\xC3\xA9"), 3u);
  EXPECT_EQ(hellaswag_preprocess("a   b"), "a  b");  // one non-overlapping pass, as str.replace
  EXPECT_EQ(hellaswag_preprocess("x [unclosed"), "x [unclosed");
  EXPECT_EQ(hellaswag_preprocess("[a][b]c"), "c");
}

TEST(EvalTasks, Xxh64KnownValues) {
  EXPECT_EQ(hex64(xxh64("", 0)), "ef46db3751d8e999");
  EXPECT_EQ(hex64(xxh64("abc", 3)), "44bc2cf5ad770999");
  const std::string s = "Nobody inspects the spammish repetition";
  EXPECT_EQ(hex64(xxh64(s.data(), s.size())), "fbcea83c8a378bf1");
  // Streaming in uneven pieces gives the one-shot value.
  std::string big(1000, '\0');
  for (size_t i = 0; i < big.size(); i++) big[i] = char((i * 131) ^ (i >> 3));
  Xxh64 h;
  for (size_t p = 0, step = 1; p < big.size(); p += step, step = step * 2 + 1) h.update(big.data() + p, std::min(step, big.size() - p));
  EXPECT_EQ(h.digest(), xxh64(big.data(), big.size()));
}

}  // namespace
}  // namespace llmprune
