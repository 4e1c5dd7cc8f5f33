"""torchvision's CIFAR-10 file layout: read by ``data.py`` (its checks and loader, no torch) and
written by ``synthetic.py`` (fake data, torch), so neither imports the other for it."""

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
