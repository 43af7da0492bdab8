"""Streamlit page: pick a model, upload a scan, look at the mask. Run with ``segvol app``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from segvol.app.logic import (AXES, MAX_UPLOAD_MB, choose_model, data_dir, dice_score, mesh_stl, reference_mask,
                              render_slice, result_key, segment_upload, server_path, tree_view)
from segvol.errors import SegvolError


def _model_sidebar(workdir: Path, allowed: Path | None):  # noqa: ANN202
    st.sidebar.header("Model")
    upload = st.sidebar.file_uploader("ONNX model", type=["onnx"], key="model_upload")
    typed = st.sidebar.text_input(f"…or a path in {allowed}", key="model_path") if allowed else ""
    uploaded = (upload.name, upload.getvalue()) if upload is not None else None
    choice = choose_model(uploaded, typed, workdir, allowed=allowed)
    st.sidebar.caption(f"Using **{choice.path}** ({choice.reason})")
    return choice


def _scan_inputs(allowed: Path | None) -> list[tuple[str, bytes]]:
    files = st.file_uploader("Scan (.nii / .nii.gz; the 4 BraTS sequences for a BraTS model)",
                             accept_multiple_files=True, key="scan_upload")
    typed = st.text_input(f"…or a scan path in {allowed}", key="scan_path") if allowed else ""
    if files:
        return [(f.name, f.getvalue()) for f in files]
    if typed.strip():
        path = server_path(typed, allowed)
        if not path.is_file():
            raise SegvolError(f"{path}: no such file")
        return [(path.name, path.read_bytes())]
    return []


def _viewer(result) -> None:  # noqa: ANN001
    st.success(f"Segmented in {result.seconds:.2f} s with {result.backend}; "
               f"{int((result.mask > 0).sum())} foreground voxels")
    view = st.radio("View", list(AXES), horizontal=True, key="axis")
    axis = AXES[view or next(iter(AXES))]  # radio returns None only when nothing is preselected
    depth = result.image.shape[axis]
    default = int(result.mask.sum(axis=tuple(a for a in range(3) if a != axis)).argmax()) if result.mask.any() \
        else depth // 2
    index = st.slider("Slice", 0, depth - 1, default, key=f"slice_{axis}")
    opacity = st.slider("Mask opacity (%)", 0, 100, 50, key="opacity") / 100
    st.image(render_slice(result.image, result.mask, axis, index, opacity), caption=f"{view} slice {index}",
             use_container_width=True, output_format="PNG")
    st.download_button("Download mask (.nii.gz)", result.mask_bytes, file_name="mask.nii.gz",
                       mime="application/gzip")
    if result.mask.any():  # the surface is built only when asked for
        st.download_button("Download surface (.stl, scanner mm)", lambda: mesh_stl(result.mask, result.affine),
                           file_name="mask.stl", mime="model/stl")
    if result.vessel and result.mask.any():
        _tree_section(result)
    ref = st.file_uploader("Reference mask (optional, for Dice)", type=["gz", "nii"], key="ref_upload")
    if ref is not None:
        ref_mask = reference_mask((ref.name, ref.getvalue()), result.mask.shape)
        st.metric("Dice vs reference", f"{dice_score(result.mask, ref_mask):.4f}")


def _tree_section(result) -> None:  # noqa: ANN001
    with st.expander("Artery tree (centrelines coloured by radius)", expanded=True):
        key = ("tree", st.session_state.get("result_key"))
        if st.session_state.get("tree_key") != key:
            # traced only when asked: most views do not need the tree (a noisy mask takes seconds, not nothing)
            if not st.button("Trace the artery tree", key="trace_tree"):
                return
            with st.spinner("Tracing the artery tree…"):
                st.session_state["tree"] = tree_view(result.mask, result.affine)
            st.session_state["tree_key"] = key
        view = st.session_state["tree"]
        st.image(view.png, caption=view.summary, use_container_width=True)
        for name, png in view.cprs:  # the curved planar reformation of each main artery
            st.image(png, caption=name, use_container_width=True)
        st.caption("Stenosis grades and narrowing marks are geometric cues (the lumen against a reference fitted to "
                   "the healthy vessel around it), not a diagnosis.")
        st.download_button("Download tree.json (centrelines, segments, radii in scanner mm)", view.json,
                           file_name="tree.json", mime="application/json")


def main() -> None:
    st.set_page_config(page_title="segvol", layout="wide")
    st.title("segvol: 3D segmentation viewer")
    st.caption(f"Uploads up to {MAX_UPLOAD_MB} MB; files are processed in a private temporary folder and deleted.")
    workdir = Path(st.session_state.setdefault("workdir", tempfile.mkdtemp(prefix="segvol-app-models-")))
    allowed = data_dir()
    try:
        model = _model_sidebar(workdir, allowed)
        files = _scan_inputs(allowed)
        if files:
            key = result_key(files, model)
            if st.session_state.get("result_key") != key:
                with st.spinner("Segmenting…"):
                    st.session_state["result"] = segment_upload(files, model)
                st.session_state["result_key"] = key
            _viewer(st.session_state["result"])
        else:
            st.info("Upload a scan to segment it.")
    except SegvolError as exc:
        st.session_state.pop("result_key", None)
        st.error(str(exc))


main()
