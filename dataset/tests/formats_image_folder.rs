//! ImageFolder trees and image lists.

use std::path::PathBuf;

use idflow_dataset::formats::image_folder::{list_image_folder, read_image_list, write_image, write_image_list};

#[test]
fn write_list_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    let mut written = Vec::new();
    for (id, name) in ["b_person", "a_person", "c_person"].iter().enumerate() {
        for s in 0..3 {
            let bytes = vec![id as u8, s as u8, 0xab];
            let ext = if s == 2 { "png" } else { "jpg" };
            let p = write_image(&root, name, &format!("{s:04}"), ext, &bytes).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), bytes);
            written.push((p, *name));
        }
    }
    std::fs::write(root.join("a_person").join("notes.txt"), b"x").unwrap();
    std::fs::create_dir_all(root.join("d_empty")).unwrap();
    let all = list_image_folder(&root, &["jpg", "PNG"], None, None).unwrap();
    assert_eq!(all.len(), 9);
    assert_eq!(all[0].1, "a_person");
    assert_eq!(all[0].0, 0);
    assert_eq!(all[3].1, "b_person");
    assert!(all.windows(2).all(|w| (w[0].0, &w[0].2) < (w[1].0, &w[1].2)));
    let limited = list_image_folder(&root, &["jpg"], Some(2), Some(1)).unwrap();
    assert_eq!(limited.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), vec!["a_person", "b_person"]);
    // list file round trip, relative paths resolved against the list's folder
    let entries: Vec<(PathBuf, usize)> = all.iter().map(|(i, _, p)| (p.strip_prefix(dir.path()).unwrap().to_path_buf(), *i)).collect();
    let list = dir.path().join("train.list");
    write_image_list(&list, &entries).unwrap();
    let back = read_image_list(&list).unwrap();
    assert_eq!(back.len(), 9);
    for ((p, l), (_, i, orig)) in back.iter().zip(all.iter().map(|(i, n, p)| (n, i, p))) {
        assert_eq!((p, l), (orig, i));
    }
    // errors
    assert!(write_image(&root, "../evil", "0", "jpg", b"").is_err());
    std::fs::write(&list, "no-tab-here\n").unwrap();
    assert!(read_image_list(&list).unwrap_err().to_string().contains("line 1"));
    assert!(list_image_folder(&dir.path().join("missing"), &["jpg"], None, None).is_err());
}
