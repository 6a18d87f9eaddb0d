"""Florence-2 backend: parsing fixed answers, and the tiny model through the real loader and generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsam2.core import InputError, ModelLoadError, PromptError, ground_and_segment, load_detector
from gsam2.core.detectors import Detector
from gsam2.core.detectors.florence2 import (
    CAPTION_TASKS,
    FLORENCE2_TASKS,
    PROMPTED_TASKS,
    REGION_LABEL,
    Florence2,
    Florence2Detector,
    clean_label,
    match_phrase,
    parsed_to_detections,
    polygons_box,
    referring_detections,
    task_token,
)

from .tiny_florence2 import build_florence2

# Unit tests use a 200 x 100 image: Florence-2 dequantises bin b to int((b + 0.5) * side / 1000).
HEIGHT, WIDTH = 100, 200
SIZE = (HEIGHT, WIDTH)

# Generated texts and what transformers' post_process_generation makes of them for a
# (width, height) = (200, 100) image; test_fixtures_are_what_transformers_returns checks
# every pair against the real processor, so the unit tests below parse real shapes.
GENERATED = {
    "object_detection": (
        "</s><s>car<loc_100><loc_200><loc_300><loc_400>door handle<loc_425><loc_504><loc_474><loc_516></s>",
        {"<OD>": {"bboxes": [[20, 20, 60, 40], [85, 50, 94, 51]], "labels": ["car", "door handle"]}},
    ),
    "dense_region_caption": (
        "</s><s>Turquoise  Volkswagen Beetle<loc_53><loc_334><loc_933><loc_775>wheel<loc_0><loc_0><loc_999><loc_999></s>",
        {
            "<DENSE_REGION_CAPTION>": {
                "bboxes": [[10, 33, 186, 77], [0, 0, 199, 99]],
                "labels": ["Turquoise  Volkswagen Beetle", "wheel"],
            }
        },
    ),
    "region_proposal": (
        "</s><s><loc_53><loc_334><loc_933><loc_775><loc_711><loc_203><loc_906><loc_546></s><pad>",
        {"<REGION_PROPOSAL>": {"bboxes": [[10, 33, 186, 77], [142, 20, 181, 54]], "labels": ["", ""]}},
    ),
    "phrase_grounding": (
        (
            "</s><s>a dog<loc_53><loc_334><loc_933><loc_775><loc_711><loc_203><loc_906><loc_546>"
            "the image<loc_0><loc_0><loc_999><loc_999>a ball<loc_100><loc_200><loc_300><loc_400></s>"
        ),
        {
            "<CAPTION_TO_PHRASE_GROUNDING>": {
                # "the image" is a banned grounding phrase: the parser drops it.
                "bboxes": [[10, 33, 186, 77], [142, 20, 181, 54], [20, 20, 60, 40]],
                "labels": ["a dog", "a dog", "a ball"],
            }
        },
    ),
    "referring_expression_segmentation": (
        "</s><s><loc_279><loc_379><loc_282><loc_379><loc_290><loc_373><loc_293><loc_373><loc_298><loc_369></s>",
        {
            "<REFERRING_EXPRESSION_SEGMENTATION>": {
                "polygons": [[[55, 37, 56, 37, 58, 37, 58, 37, 59, 36]]],
                "labels": [""],
            }
        },
    ),
    "open_vocabulary_detection": (
        "</s><s>car<loc_100><loc_200><loc_300><loc_400>building<loc_5><loc_10><loc_995><loc_600></s>",
        {
            "<OPEN_VOCABULARY_DETECTION>": {
                "bboxes": [[20, 20, 60, 40], [1, 1, 199, 60]],
                "bboxes_labels": ["car", "building"],
                "polygons": [],
                "polygons_labels": [],
            }
        },
    ),
}

# More answers whose shapes the same test checks.
OVD_POLYGON = (
    "</s><s>car<poly><loc_100><loc_200><loc_300><loc_400><loc_500><loc_500></poly></s>",
    {
        "<OPEN_VOCABULARY_DETECTION>": {
            "bboxes": [],
            "bboxes_labels": [],
            "polygons": [[[20, 20, 60, 40, 100, 50]]],
            "polygons_labels": ["car"],
        }
    },
)
# If Florence-2 echoes the separator, the parser's label keeps the special token's tail.
OVD_ECHOED_AND = (
    "</s><s>car <and> building<loc_100><loc_200><loc_300><loc_400></s>",
    {
        "<OPEN_VOCABULARY_DETECTION>": {
            "bboxes": [[20, 20, 60, 40]],
            "bboxes_labels": ["and> building"],
            "polygons": [],
            "polygons_labels": [],
        }
    },
)
RES_TWO_POLYGONS = (
    (
        "</s><s><poly><loc_279><loc_379><loc_282><loc_379><loc_290><loc_373><sep>"
        "<loc_10><loc_20><loc_30><loc_40><loc_50><loc_60></poly></s>"
    ),
    {
        "<REFERRING_EXPRESSION_SEGMENTATION>": {
            "polygons": [[[55, 37, 56, 37, 58, 37], [2, 2, 6, 4, 10, 6]]],
            "labels": [""],
        }
    },
)
NOTHING = ("</s><s></s>", {"<OD>": {"bboxes": [], "labels": []}})


def answer(task: str) -> dict:
    return GENERATED[task][1]


def assert_typed(detections, size=SIZE):
    """The types every detector returns: float32 pixel boxes inside the image, int ids, str names, no masks."""
    height, width = size
    assert detections.xyxy.dtype == np.float32 and detections.xyxy.shape == (len(detections), 4)
    assert detections.confidence.dtype == np.float32
    assert np.all(detections.confidence == 1.0)
    assert np.issubdtype(detections.class_id.dtype, np.integer)
    assert detections.mask is None
    assert len(detections.data["class_name"]) == len(detections)
    assert np.all(detections.xyxy[:, [0, 2]] >= 0) and np.all(detections.xyxy[:, [0, 2]] <= width)
    assert np.all(detections.xyxy[:, [1, 3]] >= 0) and np.all(detections.xyxy[:, [1, 3]] <= height)
    assert np.all(detections.xyxy[:, 2:] >= detections.xyxy[:, :2])


def names(detections) -> list[str]:
    return [str(name) for name in detections.data["class_name"]]


# --- the tiny model ----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Beam search over a tiny model is dominated by per-step overhead; on a shared
    # machine two threads contending made it ~40x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def florence2_folder(tmp_path_factory):
    model, processor = build_florence2()
    folder = tmp_path_factory.mktemp("tiny-florence2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def florence2(florence2_folder):
    florence2 = Florence2.from_pretrained(str(florence2_folder), torch.device("cpu"))
    florence2.max_new_tokens = 24  # random weights never stop on their own; keep the tests quick
    return florence2


def random_images():
    """Two non-square images of different sizes."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (50, 90, 3), dtype=np.uint8), rng.integers(0, 255, (120, 70, 3), dtype=np.uint8)]


# --- transformers' answer format ------------------------------------------------------------------


def test_fixtures_are_what_transformers_returns(florence2):
    width_height = (WIDTH, HEIGHT)
    for task, (text, expected) in GENERATED.items():
        token = FLORENCE2_TASKS[task]
        assert florence2.processor.post_process_generation(text, task=token, image_size=width_height) == expected
    for text, expected in (OVD_POLYGON, OVD_ECHOED_AND, RES_TWO_POLYGONS, NOTHING):
        [token] = expected
        assert florence2.processor.post_process_generation(text, task=token, image_size=width_height) == expected


def test_parse_takes_height_width_and_drops_batch_padding(florence2):
    # In a batch, shorter answers end in <pad>; the caption parser would keep it.
    answers = ["</s><s>A green car.</s><pad><pad>", "</s><s>car<loc_100><loc_200><loc_300><loc_400></s><pad>"]
    caption = florence2.parse(answers[:1], "<CAPTION>", [SIZE])
    assert caption == [{"<CAPTION>": "A green car."}]
    [detected] = florence2.parse(answers[1:], "<OD>", [SIZE])
    assert detected == {"<OD>": {"bboxes": [[20, 20, 60, 40]], "labels": ["car"]}}


# --- parsed_to_detections, one task at a time -------------------------------------------------


def test_object_detection_names_are_florence_labels():
    detections = parsed_to_detections(answer("object_detection"), "object_detection", [], SIZE)
    assert_typed(detections)
    np.testing.assert_array_equal(detections.xyxy, np.array([[20, 20, 60, 40], [85, 50, 94, 51]], np.float32))
    assert names(detections) == ["car", "door handle"]
    assert detections.class_id.tolist() == [0, 1]


def test_prompt_free_class_ids_follow_first_appearance_and_phrases_are_ignored():
    parsed = {"<OD>": {"bboxes": [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], "labels": ["wheel", "car", "wheel"]}}
    detections = parsed_to_detections(parsed, "object_detection", ["car"], SIZE)
    assert names(detections) == ["wheel", "car", "wheel"]
    assert detections.class_id.tolist() == [0, 1, 0]


def test_dense_region_captions_are_cleaned_class_names():
    detections = parsed_to_detections(answer("dense_region_caption"), "dense_region_caption", [], SIZE)
    assert_typed(detections)
    assert names(detections) == ["turquoise volkswagen beetle", "wheel"]
    assert detections.class_id.tolist() == [0, 1]
    np.testing.assert_array_equal(detections.xyxy[1], [0, 0, 199, 99])


def test_region_proposals_are_named_region():
    detections = parsed_to_detections(answer("region_proposal"), "region_proposal", [], SIZE)
    assert_typed(detections)
    assert names(detections) == [REGION_LABEL, REGION_LABEL]
    assert detections.class_id.tolist() == [0, 0]
    np.testing.assert_array_equal(detections.xyxy, np.array([[10, 33, 186, 77], [142, 20, 181, 54]], np.float32))


@pytest.mark.parametrize(
    "phrases, expected_names, expected_ids",
    [
        (["a dog", "a ball"], ["a dog", "a dog", "a ball"], [0, 0, 1]),
        (["ball", "dog"], ["dog", "dog", "ball"], [1, 1, 0]),  # the phrase inside Florence-2's label
        ([], ["a dog", "a dog", "a ball"], [0, 0, 1]),  # no phrases: the grounded text itself
    ],
)
def test_phrase_grounding_maps_grounded_text_to_phrases(phrases, expected_names, expected_ids):
    detections = parsed_to_detections(answer("phrase_grounding"), "phrase_grounding", phrases, SIZE)
    assert_typed(detections)
    assert names(detections) == expected_names
    assert detections.class_id.tolist() == expected_ids
    assert len(detections) == 3


def test_referring_expression_polygon_becomes_its_bounding_box():
    detections = parsed_to_detections(
        answer("referring_expression_segmentation"), "referring_expression_segmentation", ["the left red car"], SIZE
    )
    assert_typed(detections)
    np.testing.assert_array_equal(detections.xyxy, np.array([[55, 36, 59, 37]], np.float32))
    assert names(detections) == ["the left red car"]
    assert detections.class_id.tolist() == [0]


def test_referring_expression_box_covers_every_polygon_of_the_instance():
    detections = parsed_to_detections(RES_TWO_POLYGONS[1], "referring_expression_segmentation", ["car"], SIZE)
    np.testing.assert_array_equal(detections.xyxy, np.array([[2, 2, 58, 37]], np.float32))


def test_referring_detections_label_each_answer_with_its_phrase():
    first = answer("referring_expression_segmentation")
    second = RES_TWO_POLYGONS[1]
    too_small = {"<REFERRING_EXPRESSION_SEGMENTATION>": {"polygons": [[[1, 1, 5, 5]]], "labels": [""]}}
    detections = referring_detections([first, too_small, second], ["red car", "tiny thing", "blue car"], SIZE)
    assert_typed(detections)
    assert names(detections) == ["red car", "blue car"]
    assert detections.class_id.tolist() == [0, 2]
    np.testing.assert_array_equal(detections.xyxy, np.array([[55, 36, 59, 37], [2, 2, 58, 37]], np.float32))


def test_open_vocabulary_labels_map_back_to_phrases():
    detections = parsed_to_detections(
        answer("open_vocabulary_detection"), "open_vocabulary_detection", ["building", "car"], SIZE
    )
    assert_typed(detections)
    assert names(detections) == ["car", "building"]
    assert detections.class_id.tolist() == [1, 0]  # indexes into the phrases, not Florence-2's order
    np.testing.assert_array_equal(detections.xyxy, np.array([[20, 20, 60, 40], [1, 1, 199, 60]], np.float32))


def test_open_vocabulary_drops_labels_that_match_no_phrase():
    detections = parsed_to_detections(
        answer("open_vocabulary_detection"), "open_vocabulary_detection", ["car", "tree"], SIZE
    )
    assert names(detections) == ["car"]
    assert detections.class_id.tolist() == [0]


def test_open_vocabulary_polygons_become_boxes():
    detections = parsed_to_detections(OVD_POLYGON[1], "open_vocabulary_detection", ["car", "building"], SIZE)
    assert_typed(detections)
    np.testing.assert_array_equal(detections.xyxy, np.array([[20, 20, 100, 50]], np.float32))
    assert names(detections) == ["car"]


def test_open_vocabulary_echoed_and_separator_is_cut_from_the_label():
    detections = parsed_to_detections(OVD_ECHOED_AND[1], "open_vocabulary_detection", ["car", "building"], SIZE)
    assert names(detections) == ["building"]
    assert detections.class_id.tolist() == [1]
    prompt_free = parsed_to_detections(OVD_ECHOED_AND[1], "open_vocabulary_detection", [], SIZE)
    assert names(prompt_free) == ["building"]


def test_one_phrase_takes_every_label():
    detections = parsed_to_detections(answer("open_vocabulary_detection"), "open_vocabulary_detection", ["thing"], SIZE)
    assert names(detections) == ["thing", "thing"]
    assert detections.class_id.tolist() == [0, 0]


def test_boxes_outside_the_image_are_clipped_and_corners_ordered():
    parsed = {"<OD>": {"bboxes": [[-10, -5, 250, 80], [150, 130, 120, 90]], "labels": ["car", "dog"]}}
    detections = parsed_to_detections(parsed, "object_detection", [], SIZE)
    assert_typed(detections)
    np.testing.assert_array_equal(detections.xyxy, np.array([[0, 0, 200, 80], [120, 90, 150, 100]], np.float32))


@pytest.mark.parametrize("task", list(FLORENCE2_TASKS))
def test_empty_answers_are_typed_empty_detections(task):
    token = FLORENCE2_TASKS[task]
    empty = {
        "open_vocabulary_detection": {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []},
        "referring_expression_segmentation": {"polygons": [], "labels": []},
    }.get(task, {"bboxes": [], "labels": []})
    phrases = ["car"] if task in PROMPTED_TASKS else []
    detections = parsed_to_detections({token: empty}, task, phrases, SIZE)
    assert len(detections) == 0
    assert detections.xyxy.shape == (0, 4) and detections.xyxy.dtype == np.float32
    assert detections.confidence.shape == (0,) and detections.confidence.dtype == np.float32
    assert detections.class_id.shape == (0,) and np.issubdtype(detections.class_id.dtype, np.integer)
    assert detections.data["class_name"].shape == (0,)
    assert detections.mask is None


def test_bare_answer_without_the_task_key_is_accepted():
    bare = answer("object_detection")["<OD>"]
    detections = parsed_to_detections(bare, "object_detection", [], SIZE)
    assert names(detections) == ["car", "door handle"]


def test_polygons_box_needs_three_points():
    assert polygons_box([[1, 2, 3, 4]]) is None
    assert polygons_box([]) is None
    np.testing.assert_array_equal(polygons_box([[1, 9, 5, 2], [3, 4, 7]]), [1, 2, 5, 9])  # odd tail dropped


def test_match_phrase_rules():
    phrases = ["car", "red car", "person"]
    assert match_phrase("Red  car.", phrases) == 1  # same text after cleaning
    assert match_phrase("a red car on the left", phrases) == 1  # longest phrase inside the label
    assert match_phrase("person standing", phrases) == 2
    assert match_phrase("cars", ["car", "sports cars"]) == 1  # the label inside a phrase
    assert match_phrase("person in red", ["red car", "tree"]) == 0  # shared words
    assert match_phrase("the tree", ["the car", "a person"]) is None  # only stopwords shared
    assert match_phrase("", ["car", "dog"]) is None
    assert match_phrase("anything", ["car"]) == 0
    assert match_phrase("car", []) is None


def test_clean_label():
    assert clean_label("  A  Green Car. ") == "a green car"
    assert clean_label("loc_833>") == ""
    assert clean_label("and> building") == "building"


# --- errors ---------------------------------------------------------------------------------------


def test_invalid_task_lists_the_choices(florence2):
    with pytest.raises(InputError, match="object_detection.*open_vocabulary_detection"):
        Florence2Detector(florence2, "segment_everything")
    with pytest.raises(InputError, match="unknown Florence-2 task 'ocr'"):
        task_token("ocr")
    with pytest.raises(InputError, match="caption, detailed_caption, more_detailed_caption"):
        florence2.caption(random_images(), task="object_detection")
    with pytest.raises(InputError):
        parsed_to_detections(answer("object_detection"), "caption", [], SIZE)


@pytest.mark.parametrize("task", sorted(PROMPTED_TASKS))
def test_prompted_task_without_phrases_is_a_prompt_error(florence2, task):
    detector = Florence2Detector(florence2, task)
    with pytest.raises(PromptError, match=task):
        detector.validate_phrases([])
    with pytest.raises(PromptError):
        detector.detect(random_images(), [])
    with pytest.raises(PromptError):
        ground_and_segment(random_images(), "", detector=detector, segmenter=None)


def test_too_long_prompt_is_a_prompt_error(florence2):
    detector = Florence2Detector(florence2, "phrase_grounding")
    with pytest.raises(PromptError, match="too long"):
        detector.validate_phrases(["word " * 600])



def test_a_caption_too_long_to_ground_is_shortened_not_fatal(florence2):
    """Auto-labelling grounds a generated caption; a rambling one is cut at a word boundary to fit."""
    long_caption = "car " * 1500
    fitted = florence2.fit_text("<CAPTION_TO_PHRASE_GROUNDING>", long_caption)
    assert 0 < len(fitted.split()) < 1500 and long_caption.startswith(fitted)
    florence2.check_prompt("<CAPTION_TO_PHRASE_GROUNDING>", fitted)  # fits now
    assert florence2.fit_text("<CAPTION_TO_PHRASE_GROUNDING>", "a red car") == "a red car"
    [found] = Florence2Detector(florence2, "phrase_grounding").detect_with_caption(random_images()[:1], [long_caption])
    assert found.xyxy.shape[1] == 4


def test_captions_must_match_images(florence2):
    with pytest.raises(InputError, match="2 captions for 1 images"):
        Florence2Detector(florence2, "phrase_grounding").detect_with_caption(random_images()[:1], ["a", "b"])


def test_checkpoint_with_missing_weights_is_a_load_error(tmp_path):
    model, processor = build_florence2()
    weights = {name: tensor for name, tensor in model.state_dict().items() if "vision_tower" not in name}
    model.save_pretrained(tmp_path, state_dict=weights)
    processor.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not in transformers' native format"):
        Florence2.from_pretrained(str(tmp_path), torch.device("cpu"))


# --- the tiny model through the real loader and generation ------------------------------------------


def test_detector_protocol_and_task_flags(florence2):
    for task in FLORENCE2_TASKS:
        detector = Florence2Detector(florence2, task)
        assert isinstance(detector, Detector)
        assert detector.name == "florence2" and detector.produces_masks is False
        assert detector.requires_prompt == (
            task in {"phrase_grounding", "referring_expression_segmentation", "open_vocabulary_detection"}
        )
        assert detector.device == torch.device("cpu")


def test_prompt_texts_join_phrases_as_the_reference_does(florence2):
    phrases = ["a dog", "red ball"]
    assert Florence2Detector(florence2, "phrase_grounding").prompt_texts(phrases) == ["a dog. red ball."]
    assert Florence2Detector(florence2, "open_vocabulary_detection").prompt_texts(phrases) == ["a dog <and> red ball"]
    assert Florence2Detector(florence2, "referring_expression_segmentation").prompt_texts(phrases) == phrases
    assert Florence2Detector(florence2, "object_detection").prompt_texts(phrases) == []
    # <and> reaches the model as Florence-2's own token, not as characters.
    tokenizer = florence2.processor.tokenizer
    ids = florence2.processor(text=["<OPEN_VOCABULARY_DETECTION>a dog <and> red ball"])["input_ids"][0]
    assert tokenizer.convert_tokens_to_ids("<and>") in list(ids)


@pytest.mark.parametrize("task", list(FLORENCE2_TASKS))
def test_every_task_through_generate(florence2, task):
    images = random_images()
    detector = Florence2Detector(florence2, task)
    phrases = ["car"] if detector.requires_prompt else []
    results = detector.detect(images, phrases, box_threshold=0.9, text_threshold=0.9)
    assert len(results) == len(images)
    # Most of the tiny vocabulary is location tokens, so even random answers hold regions.
    assert sum(len(detections) for detections in results) > 0
    for detections, image in zip(results, images):
        assert_typed(detections, image.shape[:2])
        if phrases:
            assert set(names(detections)) <= set(phrases)
            assert np.all(detections.class_id == 0)
        else:
            distinct = list(dict.fromkeys(names(detections)))
            assert [distinct[i] for i in detections.class_id] == names(detections)


def test_generate_returns_parsed_answers_in_pixels(florence2):
    images = random_images()
    parsed = florence2.generate(images, "<OD>")
    assert len(parsed) == 2
    for answer_, image in zip(parsed, images):
        assert set(answer_) == {"<OD>"}
        assert set(answer_["<OD>"]) == {"bboxes", "labels"}
        boxes = np.asarray(answer_["<OD>"]["bboxes"], dtype=np.float32).reshape(-1, 4)
        assert np.all(boxes[:, [0, 2]] <= image.shape[1]) and np.all(boxes[:, [1, 3]] <= image.shape[0])
    assert florence2.generate([], "<OD>") == []


def test_several_referring_expressions_run_one_at_a_time(florence2):
    images = random_images()
    phrases = ["the red car", "a dog"]
    results = Florence2Detector(florence2, "referring_expression_segmentation").detect(images, phrases)
    for detections, image in zip(results, images):
        assert_typed(detections, image.shape[:2])
        for name, class_id in zip(names(detections), detections.class_id):
            assert phrases[class_id] == name


@pytest.mark.parametrize("task", list(CAPTION_TASKS))
def test_captions(florence2, task):
    captions = florence2.caption(random_images(), task=task)
    assert len(captions) == 2
    assert all(isinstance(caption, str) for caption in captions)
    assert not any("<pad>" in caption or "</s>" in caption for caption in captions)


def test_default_caption_task_and_generation_settings(florence2_folder):
    fresh = Florence2.from_pretrained(str(florence2_folder), torch.device("cpu"))
    assert (fresh.max_new_tokens, fresh.num_beams) == (1024, 3)  # the reference demos' settings
    # A random model never stops: this generates all 1024 tokens, which the decoder must hold.
    [caption] = fresh.caption(random_images()[:1])
    assert isinstance(caption, str) and caption


def test_detect_with_caption_labels_with_the_grounded_text(florence2):
    images = random_images()
    detector = Florence2Detector(florence2, "phrase_grounding")
    results = detector.detect_with_caption(images, ["A red car parked next to a dog.", "   "])
    assert len(results) == 2
    assert_typed(results[0], images[0].shape[:2])
    assert all(name == name.strip().lower() for name in names(results[0]))
    distinct = list(dict.fromkeys(names(results[0])))
    assert [distinct[i] for i in results[0].class_id] == names(results[0])
    assert len(results[1]) == 0 and results[1].xyxy.dtype == np.float32  # blank caption: nothing to ground
    assert detector.detect_with_caption([], []) == []


def test_loads_by_backend_name_with_a_task(florence2_folder):
    detector = load_detector(f"florence2:{florence2_folder}", device="cpu", task="region_proposal")
    assert isinstance(detector, Florence2Detector) and detector.task == "region_proposal"
    detector.florence2.max_new_tokens = 24
    other = load_detector(f"florence2:{florence2_folder}", device="cpu", task="object_detection")
    assert other.florence2 is detector.florence2  # one model serves every task
    [detections] = detector.detect(random_images()[:1], [])
    assert set(names(detections)) <= {REGION_LABEL}
