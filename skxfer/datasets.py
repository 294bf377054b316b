"""Image collections on disk: a folder of class sub-folders, or a flat folder."""

from pathlib import Path

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm",
)


def _images_in(folder):
    return sorted(
        str(p) for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_image_folder(folder):
    """List the images of ``folder`` and their labels.

    Two layouts are understood: torchvision's ``ImageFolder`` (one sub-folder
    per class, ``folder/cat/001.png``; the label is the sub-folder's name) and
    a flat folder of images (no labels).

    Parameters
    ----------
    folder : str or path-like
        The folder.

    Returns
    -------
    paths : list of str
        Image file paths, sorted by class then name.
    labels : list of str or None
        The class of each image, or None for a flat folder.

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
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder at {str(root)!r}.")
    classes = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for cls in classes:
        found = _images_in(root / cls)
        paths += found
        labels += [cls] * len(found)
    if paths:
        return paths, labels
    paths = _images_in(root)
    if not paths:
        raise ValueError(
            f"No images found in {str(root)!r} (nor in its sub-folders); looked "
            f"for {', '.join(IMAGE_EXTENSIONS)} files. Use one sub-folder per class "
            "(folder/cat/1.png) or a flat folder of images."
        )
    return paths, None
