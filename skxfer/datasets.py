"""Image collections on disk: a folder of class sub-folders, or a flat folder."""

import os
from pathlib import Path

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm",
)


def _scan(folder, chain):
    """The images of ``folder`` and its sub-folders to walk, each sorted by name.

    ``chain`` holds the real paths of the folders walked to get here (the
    root first). A sub-folder is skipped when it is hidden (its name starts
    with a dot) or when it leads back up that chain: a symlink loop such as
    ``loop -> .`` or ``up -> ..``, whose images are already taken or lie
    outside the root. Any other symlinked folder is followed.
    """
    images, folders = [], []
    with os.scandir(folder) as entries:
        entries = sorted(entries, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir():
            real = Path(os.path.realpath(entry.path))
            if entry.name.startswith(".") or any(
                    Path(c).is_relative_to(real) for c in chain):
                continue
            folders.append((entry.name, entry.path, chain + (str(real),)))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            if not entry.is_file():
                why = "is a broken link" if entry.is_symlink() else "is not a file"
                raise FileNotFoundError(f"{entry.path!r} {why}.")
            images.append(entry.path)
    return images, folders


def _images_under(folder, chain):
    """Every image in ``folder`` and, recursively, in its sub-folders."""
    images, folders = _scan(folder, chain)
    for _, path, sub_chain in folders:
        images += _images_under(path, sub_chain)
    return images


def load_image_folder(folder):
    """List the images of ``folder`` and their labels.

    Two layouts are understood, and every image of the folder is taken:

    - one sub-folder per class (torchvision's ``ImageFolder``:
      ``folder/cat/001.png``): the label is the sub-folder's name, as it is
      written; images in folders nested inside a class folder belong to that
      class (``folder/cat/kittens/002.png`` is a ``cat``);
    - a flat folder of images: no labels.

    A folder that holds both images at its top level and sub-folders with
    images is refused (say which layout you mean by moving files, or pass one
    sub-folder). Folders whose names start with a dot are skipped, and so are
    symlinks that lead back into a folder being walked (``loop -> .``); other
    symlinked folders are followed. Files are images by their extension
    (:data:`IMAGE_EXTENSIONS`, any case); a link with such a name that leads
    nowhere is refused, not skipped.

    Parameters
    ----------
    folder : str or path-like
        The folder.

    Returns
    -------
    paths : list of str
        Image file paths (through ``folder`` as given), sorted by class then
        path.
    labels : list of str or None
        The class of each image, or None for a flat folder.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a folder, or a link named like an image is broken.
    ValueError
        No images at all, or a mixed layout.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / cls / "a.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels
    ['cat', 'dog']
    >>> Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "b.png")
    >>> load_image_folder(root)
    Traceback (most recent call last):
    ...
    ValueError: '...' mixes layouts: 1 image at its top level and 2 in 2 ...
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder at {str(root)!r}.")
    top, folders = _scan(str(root), (os.path.realpath(root),))
    classes = {}
    for name, path, chain in folders:
        found = _images_under(path, chain)
        if found:
            classes[name] = sorted(found)
    if top and classes:
        n_sub = sum(map(len, classes.values()))
        shown = [f"{name}/: {len(found)}" for name, found in classes.items()]
        if len(shown) > 3:
            shown = shown[:3] + [f"{len(shown) - 3} more"]
        raise ValueError(
            f"{str(root)!r} mixes layouts: {_count(len(top), 'image')} at its top "
            f"level and {n_sub} in {_count(len(classes), 'sub-folder')} "
            f"({', '.join(shown)}); use one sub-folder per class (folder/cat/1.png) "
            "or a flat folder of images, not both: move the top-level images into "
            "a class sub-folder, or pass one sub-folder."
        )
    if classes:
        paths = [path for found in classes.values() for path in found]
        labels = [name for name, found in classes.items() for _ in found]
        return paths, labels
    if not top:
        raise ValueError(
            f"No images found in {str(root)!r} (nor in its sub-folders); looked "
            f"for {', '.join(IMAGE_EXTENSIONS)} files. Use one sub-folder per class "
            "(folder/cat/1.png) or a flat folder of images."
        )
    return sorted(top), None


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def load_digits_transfer(images=False, random_state=0):
    """A transfer-learning task that ships offline: digits -> odd vs even.

    scikit-learn's ``load_digits`` split in two disjoint, stratified halves:
    the source task is the ten digit classes of one half; the target task is
    a new one, odd (1) vs even (0), on the other half.

    Parameters
    ----------
    images : bool, default=False
        False: rows of 64 pixels in [0, 1] (float64). True: 8x8 grayscale
        images in [0, 1], shape (n, 8, 8), float32.
    random_state : int, default=0
        Seeds the split.

    Returns
    -------
    X_source, y_source, X_target, y_target : ndarrays
        ``y_source`` are digits 0-9; ``y_target`` is 1 for odd digits.

    Examples
    --------
    >>> X_src, y_src, X_tgt, y_tgt = load_digits_transfer()
    >>> X_src.shape, sorted(set(y_tgt.tolist()))
    ((898, 64), [0, 1])
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    if images:
        X = X.reshape(-1, 8, 8).astype(np.float32)
    X_src, X_tgt, y_src, y_tgt = train_test_split(
        X, y, test_size=0.5, random_state=random_state, stratify=y
    )
    return X_src, y_src, X_tgt, y_tgt % 2


def sample_per_class(y, n_per_class, random_state=None):
    """Indices of ``n_per_class`` random samples of each class, and of the rest.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_per_class : int
        Samples to draw from each class (without replacement).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    labelled, rest : ndarray of int
        Indices of the drawn samples, and of all the others.

    Examples
    --------
    >>> labelled, rest = sample_per_class([0, 0, 0, 1, 1, 1], 2, random_state=0)
    >>> len(labelled), len(rest)
    (4, 2)
    """
    import numpy as np
    from sklearn.utils import check_random_state

    y = np.asarray(y)
    rng = check_random_state(random_state)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_per_class:
        raise ValueError(
            f"n_per_class={n_per_class}, but class {classes[counts.argmin()]!r} "
            f"has only {counts.min()} samples."
        )
    labelled = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), n_per_class, replace=False)
         for c in classes]
    )
    return labelled, np.setdiff1d(np.arange(len(y)), labelled)
